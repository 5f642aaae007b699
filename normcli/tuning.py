"""The tuning settings read from the environment: ``NORMCLI_THREADS`` and ``NORMCLI_BLOCK_SIZE``."""
from __future__ import annotations

import os

from normcli.errors import UsageError

#: The largest values accepted: beyond them a setting only costs memory (a 1 GiB buffer is
#: allocated for a CSV piece of that size, whatever the input's size).
MOST_THREADS = 256
MOST_BLOCK_SIZE = 1 << 30


def env_count(name: str, most: int) -> int | None:
    """The whole number from 1 to ``most`` that the environment variable ``name`` holds; None
    when it is unset or empty. Anything else is a UsageError: a mistyped setting in a cron job
    would otherwise be dropped without a word."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= most:
        raise UsageError(f"{name} must be a whole number from 1 to {most:,}, got {text!r}")
    return int(text)

"""The ``normcli`` command's entry point.

Loading the command line takes a moment (Typer, Rich; then a command's libraries): a SIGINT in
that moment ends the run as one later would, with one line and exit code 130, not a traceback.
"""
from __future__ import annotations

import os
import sys


def run() -> None:
    """Load the command line and run it."""
    try:
        from normcli.cli import run as run_cli
    except KeyboardInterrupt:
        print("Error: interrupted by SIGINT", file=sys.stderr, flush=True)
        os._exit(130)
    run_cli()

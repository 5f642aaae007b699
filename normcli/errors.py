"""The one error hierarchy of normcli and the exit codes it maps to.

Library code raises these; only the CLI turns them into a message and an exit code.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

# The documented exit codes (README, "Exit codes"). Keep this table and the README in step.
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_STATS = 4
EXIT_IO = 5
EXIT_DRIFT = 6
EXIT_SIGHUP = 129
EXIT_SIGINT = 130
EXIT_SIGQUIT = 131
EXIT_SIGTERM = 143
EXIT_SIGXCPU = 152


class NormcliError(Exception):
    """Base class: an error a user can act on, reported as one line and an exit code."""

    exit_code = EXIT_INTERNAL


class UsageError(NormcliError):
    """Invalid options or arguments: an unknown method, a bad range, output equal to input."""

    exit_code = EXIT_USAGE


class DataError(NormcliError):
    """The input data cannot be used: unparsable CSV, a non-numeric value in a fitted column."""

    exit_code = EXIT_DATA


class RowError(DataError):
    """A DataError about one row of a batch, ``row`` its index there: the engine, which knows the
    batch's place in the input, names the line (``located``), between ``head`` and ``tail``."""

    def __init__(self, head: str, tail: str, row: int) -> None:
        super().__init__(head + tail)
        self.head, self.tail, self.row = head, tail, row

    def located(self, where: str | None) -> DataError:
        """The error with the row's place in the input (``"line 7"``), when known."""
        return DataError(f"{self.head} on {where}{self.tail}" if where else self.head + self.tail)


class StatsFileError(NormcliError):
    """The stats file is not valid JSON, of another version, damaged, or does not fit the data."""

    exit_code = EXIT_STATS


class IOFailure(NormcliError):
    """A file could not be read or written: missing, permission denied, disk full."""

    exit_code = EXIT_IO


class Interrupted(NormcliError):
    """The run was stopped by SIGHUP, SIGINT, SIGQUIT, SIGTERM or SIGXCPU (a CPU time limit); the
    exit code follows the signal."""

    def __init__(self, signum: int) -> None:
        import signal

        name = signal.Signals(signum).name
        why = " (the CPU time limit, ulimit -t)" if signum == signal.SIGXCPU else ""
        super().__init__(f"interrupted by {name}{why}")
        self.exit_code = 128 + signum


@contextlib.contextmanager
def naming_input(path: str, several: bool) -> Iterator[None]:
    """Inside, a data or stats-file error from the input ``path`` names it (unless it does
    already) when the run reads ``several`` inputs: "line 3" alone does not say which."""
    try:
        yield
    except (DataError, StatsFileError) as exc:
        shown = "standard input" if path == "-" else f"'{path}'"
        if not several or shown in str(exc):
            raise
        raise type(exc)(f"{shown}: {exc}") from exc.__cause__

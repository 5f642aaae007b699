"""Output files: the temporary file beside a target that an output is written to first, or an
existing device, FIFO or socket written as is."""
from __future__ import annotations

import contextlib
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .. import threads
from ..errors import IOFailure


def default_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process's umask."""
    return 0o666 & ~_umask()


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read where Linux shows it (``/proc/self/status``, since 4.7).

    Elsewhere it is set and put back, under a lock: ``os.umask`` is the only other way to read
    it, and two threads interleaving there would both read the 0 the other set and leave it so,
    for every file the process (a host application calling the API) creates afterwards.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        umask = os.umask(0)
        os.umask(umask)
    return umask


def is_special(path: str) -> bool:
    """Whether ``path`` names an existing file that is neither a regular file nor a directory:
    a device (``/dev/null``, a terminal), a FIFO or a socket, which an output writes into as is."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def open_output(path: str) -> tuple[BinaryIO, str | None, str]:
    """Open the output ``path`` for writing: the file, the temporary (or None) and the target.

    An existing device, FIFO or socket is opened as is and written directly, streaming: it is
    never replaced (a reader of a FIFO gets the data; ``/dev/full`` gives its error). Anything
    else is written to a temporary file (see :func:`temp_beside`) that the caller renames over
    the target: ``path`` with its symbolic links followed, so that a link stays a link and the
    file it points to is replaced. IOFailure naming ``path`` when it cannot be opened.
    """
    if is_special(path):
        try:
            # No O_CREAT or O_TRUNC: the file is written as it is, never made or replaced.
            fd = os.open(path, os.O_WRONLY)
        except OSError as exc:
            raise IOFailure(f"cannot write '{path}': {exc.strerror or exc}") from exc
        return os.fdopen(fd, "wb", buffering=1 << 20), None, path
    try:
        target = os.path.realpath(path, strict=True)
    except FileNotFoundError:  # a new file (or a link to one)
        target = os.path.realpath(path)
    except OSError as exc:  # a loop of symbolic links points to no file: renaming over it would replace a link
        raise IOFailure(f"cannot write '{path}': {exc.strerror or exc}") from exc
    fd, tmp = temp_beside(target, path)
    return os.fdopen(fd, "wb", buffering=1 << 20), tmp, target


# Temporary files made and not yet renamed into place or removed. A signal can stop the run
# between a file's creation and the moment its output takes charge of it: the command line
# removes what is left here as it exits (discard_pending).
_PENDING: set[str] = set()


def temp_beside(path: str, shown: str | None = None) -> tuple[int, str]:
    """Create a temporary file ``.NAME.*.normcli-tmp`` in the directory of ``path``, to be
    renamed over it; return its descriptor and path (pending until :func:`settled`).

    It is created 0600, as by mkstemp, then given the mode a plain create would give, so that
    the output does not depend on how it was written. IOFailure naming ``shown`` (default
    ``path``) when the file cannot be created.
    """
    directory, name = os.path.split(os.path.abspath(path))
    # at most 200 bytes of the name, so that any name the file system takes (255 bytes) leaves
    # room for the dot, the random part and the suffix
    name = os.fsdecode(os.fsencode(name)[:200])
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.normcli-tmp")
        _PENDING.add(tmp)  # before it exists: from here on, an interruption leaves nothing behind
        try:
            fd = os.open(tmp, flags, 0o600)
            break
        except FileExistsError:  # another file's name (a chance of 2^-64): not ours to remove
            _PENDING.discard(tmp)
        except OSError as exc:
            _PENDING.discard(tmp)
            raise IOFailure(f"cannot write '{shown or path}': {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, default_mode())
    except OSError:
        pass
    return fd, tmp


def settled(tmp: str) -> None:
    """``tmp`` (from :func:`temp_beside`) has been renamed into place or removed."""
    _PENDING.discard(tmp)


def discard_pending() -> None:
    """Remove the temporary files that no output renamed or removed (the run was interrupted)."""
    while _PENDING:
        try:
            os.unlink(_PENDING.pop())
        except OSError:  # never made, or already renamed
            pass


@contextlib.contextmanager
def parent_directories(path: str) -> Iterator[None]:
    """Create the missing directories above ``path`` for the block's output; if the block
    fails, remove the ones created here that are still empty, so that no debris is left."""
    missing = []
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(directory) and directory != os.path.dirname(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    made: list[str] = []  # shallowest first
    try:
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                if not os.path.isdir(d):  # a file in the way
                    raise
                continue  # made meanwhile by another run: not ours to remove
            made.append(d)
    except OSError as exc:
        _remove_empty(made)
        raise IOFailure(f"cannot write '{path}': {exc.strerror or exc}") from exc
    try:
        yield
    except BaseException:
        _remove_empty(made)
        raise


def _remove_empty(made: list[str]) -> None:
    """Remove the directories ``made`` (shallowest first), deepest first, while they are empty."""
    for d in reversed(made):
        try:
            os.rmdir(d)
        except OSError:
            break


@contextlib.contextmanager
def exclusive(path: str, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock (``flock``) on the regular file at ``path`` while inside, so that
    runs which read, change and replace that file take turns instead of losing each other's
    change. The lock is taken on the file that is at ``path`` once it is held: a file replaced
    by the run before is let go and the new one locked. ``waiting`` is called once if another
    run holds it. A path that is not a regular file it can open is not locked (its reader
    reports what is wrong), nor is anything where ``flock`` does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    while True:
        try:
            fd: int | None = os.open(path, os.O_RDONLY)
        except OSError:
            fd = None
        if fd is not None and not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            fd = None
        if fd is None:
            yield
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is not None:
                    waiting()
                    waiting = None
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                held = os.path.samestat(os.fstat(fd), os.stat(path))
            except OSError:
                held = False
        except BaseException:
            os.close(fd)
            raise
        if held:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


class Writeback:
    """Writes a growing output file to disk behind its writer, in a thread of its own.

    Every :attr:`STEP` bytes the thread syncs what the file holds so far and drops those pages
    from the page cache. The writer never waits for the disk until :meth:`finish`, whose fsync
    then waits only for the last part: on a disk that keeps up with the writer, a fraction of a
    second instead of the whole output's write-back at the end. The page cache does not fill
    with the output either.
    """

    STEP = 32 << 20

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._asked = 0  # the file size the thread was last asked to sync
        self._error: OSError | None = None
        self._wake = threading.Condition()
        self._stopping: str | None = None  # "finish" or "abandon"
        self._thread: threading.Thread | None = None
        self._running = False

    def written(self) -> None:
        """Call after each write: every STEP bytes, wakes the thread to sync the file so far."""
        size = os.fstat(self._fd).st_size
        if size - self._asked < self.STEP:
            return
        with self._wake:
            self._asked = size
            self._wake.notify()
            if self._thread is None:
                self._running = True
                self._thread = threading.Thread(target=self._run, name="normcli-writeback", daemon=True)
                threads.start(self._thread)

    def _run(self) -> None:
        done = 0
        try:
            while True:
                with self._wake:
                    while self._asked == done and self._stopping is None:
                        self._wake.wait()
                    if self._stopping is not None:
                        return
                    size = self._asked
                try:
                    _datasync(self._fd)
                    if hasattr(os, "posix_fadvise"):
                        os.posix_fadvise(self._fd, 0, size, os.POSIX_FADV_DONTNEED)
                except OSError as exc:  # raised by finish(); the writer goes on meanwhile
                    self._error = exc
                    return
                done = size
        finally:
            with self._wake:
                self._running = False
                close = self._stopping == "abandon"
            if close:
                os.close(self._fd)

    def _stop(self, how: str) -> bool:
        """Tell the thread to stop; True if it is still running."""
        with self._wake:
            self._stopping = how
            self._wake.notify()
            return self._running

    def finish(self) -> None:
        """Wait for the thread, then fsync the whole file: OSError if any of it failed."""
        try:
            if self._stop("finish"):
                self._thread.join()
            if self._error is not None:
                raise self._error
            os.fsync(self._fd)
        finally:
            self.abandon()  # closes the descriptor, or has the thread close it if the join was interrupted

    def abandon(self) -> None:
        """Stop without waiting for the disk (the file is being thrown away); a thread still
        syncing closes the descriptor when it returns."""
        if not self._stop("abandon"):
            os.close(self._fd)


_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync

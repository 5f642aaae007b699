"""Starting threads so that a stopping signal cannot break the start.

CPython's ``Thread.start()`` is not safe against an exception raised by a signal handler
(SIGINT's KeyboardInterrupt, or the stop normcli raises on SIGTERM, SIGHUP, SIGQUIT and
SIGXCPU): raised just as the new thread is created, it makes ``start()`` undo the registration
the new thread is already doing, and that thread dies in its bootstrap with "Exception ignored
in thread started by ... KeyError", a traceback on stderr beside the run's one line. The
stopping signals are therefore held (blocked) while a thread starts; one that arrives meanwhile
is handled as soon as the start is over. Threads started so keep them blocked, which leaves
them to the main thread, the only one whose handlers run anyway.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

_STOPPING = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGXCPU}


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Block the stopping signals in this thread for the ``with`` body (not on platforms
    without ``pthread_sigmask``). Signals the thread already blocked stay blocked."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # The handler of a signal that arrived before the block can still run as the call returns:
    # the mask is read first, so that such an exception leaves nothing to undo.
    held = _STOPPING - signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def start(thread: threading.Thread) -> None:
    """``thread.start()`` with the stopping signals held."""
    with signals_held():
        thread.start()


class Pool(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose worker threads (started by ``submit`` as they are needed)
    are started with the stopping signals held."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        if len(self._threads) >= self._max_workers:  # all started: no hold for each further piece
            return super().submit(fn, *args, **kwargs)
        with signals_held():
            return super().submit(fn, *args, **kwargs)

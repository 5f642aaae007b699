"""The local streaming engine: source -> fit or transform -> sink, in bounded memory.

Pieces of the input are read in order by a producer thread, decoded and processed by a small
pool of worker threads (pyarrow, NumPy and Polars release the GIL, so both cores work), and
their results consumed in input order. At most a fixed number of pieces are in flight, so
memory does not grow with the input.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

import pyarrow as pa

from normcli import threads, tuning
from normcli.errors import RowError

T = TypeVar("T")
R = TypeVar("R")
_DONE = object()


class Progress(Protocol):
    """Receives one call per finished piece (input bytes it covered and rows it held)."""

    def advance(self, nbytes: int, rows: int) -> None: ...


class _NoProgress:
    def advance(self, nbytes: int, rows: int) -> None:
        pass


def default_workers(spare: int = 0) -> int:
    """Worker threads: one per core plus ``spare``, at least one (``NORMCLI_THREADS`` sets the number)."""
    count = tuning.env_count("NORMCLI_THREADS", tuning.MOST_THREADS)
    if count is not None:
        return count
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores) + spare


def ordered_map(items: Iterable[T], fn: Callable[[T], R], workers: int | None = None) -> Iterator[R]:
    """``fn`` over ``items`` in a thread pool, yielding results in input order.

    ``items`` is iterated in its own thread; at most ``2 * workers + 1`` items are being worked on
    or waiting to be consumed (room for the consumer to stall on a slow write without idling
    the workers), and one more is read ahead: memory is bounded by the item size. An exception in ``items`` or ``fn`` is re-raised here;
    closing the generator early stops the producer and drops pending work.
    """
    workers = workers or default_workers()
    pending: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        pending.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            pending.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            pending.put(exc)

    producer = threading.Thread(target=produce, name="normcli-reader", daemon=True)
    threads.start(producer)
    pool = threads.Pool(max_workers=workers, thread_name_prefix="normcli-worker")
    inflight: deque[Future] = deque()
    try:
        exhausted = False
        while True:
            while not exhausted and len(inflight) <= 2 * workers:
                item = pending.get()
                if item is _DONE:
                    exhausted = True
                elif isinstance(item, BaseException):
                    raise item
                else:
                    inflight.append(pool.submit(fn, item))
            if not inflight:
                return
            yield inflight.popleft().result()
    finally:
        stop.set()
        for f in inflight:
            f.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        _drain(pending, producer)


def _drain(pending: queue.Queue, producer: threading.Thread, seconds: float = 1.0) -> None:
    """Empty ``pending`` until its producer has returned, for at most ``seconds``.

    Left running, the producer could still be executing Python while an interrupted process
    shuts down, and the interpreter then prints "Exception ignored in thread" beside the one
    error line. It sees the stop within its 0.1 s put timeout; emptying the queue frees its last
    put (the end, or an error), which does not look at the stop. A signal's exception raised just
    after ``pending.get()`` took the queue's lock, before the ``with`` that releases it began,
    leaves that lock held by this thread: then the queue is left as it is, not waited on forever.
    """
    deadline = time.monotonic() + seconds
    while producer.is_alive() and time.monotonic() < deadline:
        if not pending.mutex.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            return  # held all along, by this thread: it will never be released
        pending.mutex.release()
        try:
            pending.get(timeout=0.05)
        except queue.Empty:
            pass


class Source(Protocol):
    """What the engine needs of an input (see :mod:`normcli.io`)."""

    path: str
    size: int | None
    #: optional: True when decode() hands the parse to a thread pool of its own and waits for it
    decode_waits: bool

    def pieces(self, numeric: Sequence[str], keep_others: bool, keep: Sequence[str] = ()) -> Iterator[Any]: ...
    def decode(self, piece: Any) -> pa.RecordBatch: ...


class Sink(Protocol):
    """What the engine needs of an output (see :mod:`normcli.io`)."""

    def encode(self, batch: pa.RecordBatch) -> Any: ...
    def write(self, encoded: Any) -> None: ...


@dataclass
class InputSummary:
    """What a pass over one input saw."""

    path: str
    rows: int = 0
    bytes: int | None = None
    extra: dict = field(default_factory=dict)


def fold(source: Source, numeric: Sequence[str], partial: Callable[[pa.RecordBatch], T],
         merge: Callable[[T, T], T], start: T, progress: Progress | None = None,
         workers: int | None = None, keep: Sequence[str] = ()) -> tuple[T, InputSummary]:
    """Reduce ``source`` to one value: ``partial`` per batch (in threads), ``merge`` in order.

    Batches hold the ``numeric`` columns as float64 and the ``keep`` columns as read.

    Merging in input order keeps the result independent of thread timing.
    """
    progress = progress or _NoProgress()
    summary = InputSummary(source.path, 0, source.size)
    if workers is None and getattr(source, "decode_waits", False):
        # A worker waits while the parser's pool works on its piece, then sums under the GIL;
        # one worker more than cores keeps that pool fed in between (0.91-0.95x the wall time
        # of a 5M-row CSV fit). A transform gains nothing from it and holds more in flight.
        workers = default_workers(spare=1)

    def work(piece: Any) -> tuple[T, int, int]:
        batch = source.decode(piece)
        try:
            return partial(batch), batch.num_rows, piece.nbytes
        except RowError as exc:  # the batch's row, named by its place in the input
            where = getattr(source, "where", None)
            raise exc.located(where(piece, exc.row) if where else None) from None

    acc = start
    for value, rows, nbytes in ordered_map(source.pieces(numeric, False, keep), work, workers):
        acc = merge(acc, value)
        summary.rows += rows
        progress.advance(nbytes, rows)
    return acc, summary


def pipe(source: Source, sink: Sink, numeric: Sequence[str], fn: Callable[[pa.RecordBatch], pa.RecordBatch],
         progress: Progress | None = None, workers: int | None = None) -> InputSummary:
    """Stream ``source`` through ``fn`` into ``sink``, keeping every column and the row order."""
    progress = progress or _NoProgress()
    summary = InputSummary(source.path, 0, source.size)

    def work(piece: Any) -> tuple[Any, int, int]:
        batch = fn(source.decode(piece))
        return sink.encode(batch), batch.num_rows, piece.nbytes

    for encoded, rows, nbytes in ordered_map(source.pieces(numeric, True), work, workers):
        sink.write(encoded)
        summary.rows += rows
        progress.advance(nbytes, rows)
    return summary

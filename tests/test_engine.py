"""The streaming engine's threading: input order, bounded work in flight, and the worker count."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import pyarrow as pa
import pytest

from normcli import engine


@dataclass
class _Piece:
    index: int
    nbytes: int = 1


class _Source:
    """``n`` pieces; ``decode`` records how many run at once and may wait at a barrier."""

    path = "fake"
    size = None

    def __init__(self, n: int, decode_waits: bool, barrier: threading.Barrier | None = None):
        self.n = n
        self.decode_waits = decode_waits
        self.barrier = barrier
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def pieces(self, numeric, keep_others, keep=()):
        return (_Piece(i) for i in range(self.n))

    def decode(self, piece: _Piece) -> pa.RecordBatch:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if self.barrier is not None and piece.index < self.barrier.parties:
                self.barrier.wait(timeout=10)  # breaks (and fails the fold) unless all arrive
            time.sleep(random.random() / 500)
        finally:
            with self.lock:
                self.running -= 1
        return pa.RecordBatch.from_pydict({"i": [piece.index]})


def _fold(source: _Source) -> list[int]:
    acc, summary = engine.fold(source, ["i"], lambda b: b.column(0).to_pylist(), lambda a, b: a + b, [])
    assert summary.rows == source.n
    return acc


def test_fold_merges_in_input_order():
    assert _fold(_Source(200, decode_waits=False)) == list(range(200))


def test_ordered_map_keeps_order_and_bounds_what_is_in_flight():
    started, done = [], []

    def fn(i: int) -> int:
        started.append(i)
        time.sleep(random.random() / 500)
        return i

    for i in engine.ordered_map(range(300), fn, workers=2):
        done.append(i)
        # at most 2 * workers + 1 items are worked on or waiting, and none runs far ahead
        assert len(started) - len(done) <= 2 * 2 + 1
    assert done == list(range(300))


def test_a_source_whose_decode_waits_gets_one_more_worker_than_cores(monkeypatch):
    monkeypatch.delenv("NORMCLI_THREADS", raising=False)
    cores = engine.default_workers()
    # every worker must be inside decode at once for the barrier to open
    source = _Source(50, decode_waits=True, barrier=threading.Barrier(cores + 1))
    assert _fold(source) == list(range(50))
    assert source.most == cores + 1


def test_other_sources_get_one_worker_per_core(monkeypatch):
    monkeypatch.delenv("NORMCLI_THREADS", raising=False)
    source = _Source(200, decode_waits=False)
    assert _fold(source) == list(range(200))
    assert source.most <= engine.default_workers()


def test_normcli_threads_sets_the_worker_count_exactly(monkeypatch):
    monkeypatch.setenv("NORMCLI_THREADS", "1")
    source = _Source(100, decode_waits=True)
    assert _fold(source) == list(range(100))
    assert source.most == 1


def test_an_error_in_decode_reaches_the_caller():
    class Failing(_Source):
        def decode(self, piece):
            if piece.index == 7:
                raise ValueError("piece 7")
            return super().decode(piece)

    with pytest.raises(ValueError, match="piece 7"):
        _fold(Failing(50, decode_waits=True))


def test_draining_the_queue_gives_up_on_a_lock_this_thread_holds():
    # A signal's exception raised between Queue.get()'s taking of the lock and the `with` that
    # would release it leaves the lock held by the consumer: the clean-up must not wait forever.
    import queue

    pending: queue.Queue = queue.Queue(maxsize=1)
    pending.put(1)
    blocked = threading.Thread(target=pending.put, args=(2,), daemon=True)  # a producer stuck in put()
    blocked.start()
    pending.mutex.acquire()  # as the interrupted get() leaves it
    try:
        start = time.monotonic()
        engine._drain(pending, blocked, seconds=0.5)
        assert time.monotonic() - start < 2
    finally:
        pending.mutex.release()
    engine._drain(pending, blocked)  # with the lock free it frees the producer
    blocked.join(1)
    assert not blocked.is_alive()

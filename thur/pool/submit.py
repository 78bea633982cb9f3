"""Asynchronous puts: a small worker pool with a byte window.

`LocalStore.submit()` (and `TieredPool.submit()`) hand a chunk to these
workers and return a future at once, so the caller's thread can cut the next
chunk while earlier ones are hashed, compressed, written and group-committed
(commit.py). The window caps the plaintext bytes accepted but not yet
stored: memory stays bounded whatever the dataset, and a producer faster
than the disk simply waits here — the same contract as backpressure, nothing
is dropped and nothing is acknowledged early (a future resolves only after
its chunk's row is committed). A worker hands a staged chunk to the group
commit and takes the next one without waiting for it; the chunk's bytes stay
counted in the window until its commit, which bounds the staged-but-not-yet-
committed chunks too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import PutResult

Data = bytes | bytearray | memoryview
SkipIf = Callable[[bytes], bool]


def _chain(src: Future[PutResult], dst: Future[PutResult]) -> None:
    e = src.exception()
    if e is not None:
        dst.set_exception(e)
    else:
        dst.set_result(src.result())


def default_put_workers() -> int:
    # One compressing thread per core, plus as many again to cover fsync waits.
    return max(2, min(16, 2 * (os.cpu_count() or 1)))


class Submitter:
    """Runs puts on `workers` threads (created on first use) with a byte window."""

    def __init__(self, workers: int, window: int) -> None:
        if workers < 1 or window < 1:
            raise ValueError("put_workers and submit_window must be positive")
        self.workers = workers
        self.window = window
        self._cond = threading.Condition()
        self._inflight = 0
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    def submit(
        self,
        begin: Callable[..., PutResult | Future[PutResult]],
        data: Data,
        skip_if: SkipIf | None,
    ) -> Future[PutResult]:
        """Run `begin(data, skip_if=...)` on a worker; the future resolves with its result.

        `begin` may return a future of its own (a chunk staged and queued for
        the group commit): the worker then goes on with the next chunk, and
        the returned future, and the window, follow that one.
        """
        n = len(data)
        with self._cond:
            if self._closed:
                raise RuntimeError("the pool is closed")
            # A chunk bigger than the whole window still goes through, alone.
            while self._inflight and self._inflight + n > self.window:
                self._cond.wait()
            self._inflight += n
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="thur-put")
            executor = self._executor
        out: Future[PutResult] = Future()
        out.add_done_callback(lambda _f: self._done(n))

        def run() -> None:
            try:
                r = begin(data, skip_if=skip_if)
            except BaseException as e:
                out.set_exception(e)
                return
            if isinstance(r, Future):
                r.add_done_callback(lambda f: _chain(f, out))
            else:
                out.set_result(r)

        try:
            executor.submit(run)
        except BaseException:
            self._done(n)
            raise
        return out

    def _done(self, n: int, *_: Any) -> None:
        with self._cond:
            self._inflight -= n
            self._cond.notify_all()

    @property
    def inflight(self) -> int:
        with self._cond:
            return self._inflight

    def close(self) -> None:
        """Finish what was submitted (up to staging), then stop the workers."""
        with self._cond:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

"""Group commit: many writers, one durable commit for whatever is queued.

Each writer appends its chunk's record to a segment (in its own thread)
and queues it with `GroupCommit.enqueue(item)`, which returns a future at
once: the writer's thread is free to hash, compress and write its next
chunk while earlier ones are committed. One committer thread (running while
there is work) takes *every* queued item and runs the commit function once
for them (flush the segments they were appended to, insert their rows in
one sqlite transaction), then resolves their futures. No item ever waits for a batch
to fill: a lone item is committed at once, and batches grow with what
arrives during the previous commit — for a `put_many` of a volume's
write-back, most of the batch.

`commit(item)` is `enqueue(item).result()`, for a synchronous `put()`.

This is the classic database trick; it keeps "acknowledged only once
durable" while the segment flushes and the sqlite commit are paid once
per batch instead of once per chunk (before 2026-11-23 the writer itself
led the commit and waited for it, so batches were no bigger than the number
of writer threads: ~1.5 chunks per commit in a volume's write-back).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Batch `enqueue(item)` calls into calls of `commit_many(items)` on one thread.

    `commit_many` must be all-or-nothing for its batch: when it raises, every
    item of that batch gets the exception and nothing of the batch counts
    as committed.
    """

    def __init__(
        self,
        commit_many: Callable[[list[T]], None],
        *,
        max_batch: int = 1024,
        name: str = "thur-pool-commit",
    ) -> None:
        self._commit_many = commit_many
        self._max_batch = max_batch
        self._name = name
        self._cond = threading.Condition()
        self._queue: list[tuple[T, Future[None]]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # commits run (for stats and tests)
        self.items = 0

    def enqueue(self, item: T) -> Future[None]:
        """Queue `item`; the future resolves once it is durably committed (or fails)."""
        fut: Future[None] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the pool is closed")
            self._queue.append((item, fut))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return fut

    def commit(self, item: T) -> None:
        """Return once `item` is durably committed; raise the batch's error otherwise."""
        self.enqueue(item).result()

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    # Idle: the thread ends (the next enqueue starts another),
                    # so it never keeps an unused pool alive.
                    self._thread = None
                    return
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            error: BaseException | None = None
            try:
                self._commit_many([item for item, _f in batch])
            except BaseException as e:  # handed to every item of the batch
                error = e
            with self._cond:
                self.batches += 1
                self.items += len(batch)
            for _item, fut in batch:
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)

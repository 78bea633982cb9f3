"""Group commit: many writers, one durable commit for whatever is queued.

Each writer stages its own chunk file (tmp + fsync + rename, in its own
thread, so file fsyncs of concurrent writers overlap and the kernel batches
their journal commits), then calls `GroupCommit.commit(item)`. The first
writer to arrive while no commit is running becomes the *leader*: it takes
every queued item — its own and those of writers who arrived meanwhile — and
runs the commit function once (fsync the directories they touched, insert
their rows in one sqlite transaction). The others wait for the leader and
return (or raise) with it. No writer ever waits for a batch to fill: a lone
writer commits alone at once, and batches grow exactly as concurrency does.

This is the classic database trick; it keeps "acknowledged only once
durable" while the number of directory fsyncs and sqlite commits per chunk
drops from one each to one per batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Ticket:
    done: bool = False
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Batch concurrent `commit(item)` calls into calls of `commit_many(items)`.

    `commit_many` must be all-or-nothing for its batch: when it raises, every
    writer of that batch gets the exception and nothing of the batch counts
    as committed.
    """

    def __init__(self, commit_many: Callable[[list[T]], None], *, max_batch: int = 256) -> None:
        self._commit_many = commit_many
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[tuple[T, _Ticket]] = []
        self._leading = False
        self.batches = 0  # commits run (for stats and tests)
        self.items = 0

    def commit(self, item: T) -> None:
        """Return once `item` is durably committed; raise the batch's error otherwise."""
        ticket = _Ticket()
        with self._cond:
            self._queue.append((item, ticket))
            while not ticket.done:
                if self._leading:
                    self._cond.wait()
                    continue
                self._lead()
            if ticket.error is not None:
                raise ticket.error

    def _lead(self) -> None:
        # Called with the lock held; drops it while the commit runs so that
        # the next writers can queue up behind this batch.
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        self._leading = True
        error: BaseException | None = None
        self._cond.release()
        try:
            self._commit_many([item for item, _t in batch])
        except BaseException as e:  # handed to every writer of the batch
            error = e
        finally:
            self._cond.acquire()
            self._leading = False
            self.batches += 1
            self.items += len(batch)
            for _item, t in batch:
                t.done = True
                t.error = error
            self._cond.notify_all()

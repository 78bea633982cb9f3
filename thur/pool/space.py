"""The local store's space accounting: budget, disk-free floor, eviction, backpressure.

A mixin of `LocalStore` (store.py), split out to keep each module readable;
every method here runs with the store's condition held unless it says
otherwise. Bytes are counted three ways: `_used` (committed chunk files),
`_inflight` (reserved by writers whose files are not committed yet — staged
files waiting for their group commit count here, so a batch can never
overrun the budget) and `_pinned` (committed, not yet in the backend).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .errors import BackpressureTimeout
from .layout import ChunkFiles


@dataclass(slots=True)
class SpaceCounters:
    """Since open, for metrics; updated with the store's condition held."""

    evictions: int = 0  # chunks evicted to make room
    evicted_bytes: int = 0
    backpressure_waits: int = 0  # writes that had to wait for room at least once
    backpressure_wait_seconds: float = 0.0
    backpressure_timeouts: int = 0
    logical_bytes: int = 0  # plaintext given to put()
    dedup_hits: int = 0  # puts of a chunk the cache or the backend already had
    unique_bytes: int = 0  # plaintext of the chunks put() stored


class SpaceMixin:
    # Provided by LocalStore.
    config: Any
    clock: Clock
    budget: int
    _cond: threading.Condition
    _db: sqlite3.Connection
    _files: ChunkFiles
    _disk_free: Callable[[], int]
    _sizes: dict[bytes, int]
    _lru: OrderedDict[bytes, None]
    _used: int
    _pinned: int
    _inflight: int
    _writing: set[bytes]
    counters: SpaceCounters

    def _initial_budget(self) -> int:
        if self.config.budget_bytes is not None:
            return self.config.budget_bytes
        auto = int((self._disk_free() + self._used) * self.config.auto_budget_fraction)
        return max(self.config.min_budget_bytes, auto)

    def _fits(self, size: int) -> bool:
        if self._used + self._inflight + size > self.budget:
            return False
        return self._disk_free() - self._inflight - size >= self.config.disk_free_floor

    def _reserve(self, cid: bytes, size: int, deadline: tuple[float, float]) -> bool:
        """Reserve room for one file; False if the chunk appeared meanwhile.

        Only one writer per id at a time: a second one waits for the first
        and then finds the chunk present.
        """
        waited = False
        with self._cond:
            while True:
                if cid in self._sizes:
                    return False
                if cid in self._writing:
                    self._cond.wait(self.config.poll_interval)
                    continue
                if not self._fits(size):
                    self._evict_for(size)
                if self._fits(size):
                    self._inflight += size
                    self._writing.add(cid)
                    return True
                if not waited:
                    waited = True
                    self.counters.backpressure_waits += 1
                self._wait_locked(deadline, size)

    def _wait_a_little(self, deadline: tuple[float, float], size: int) -> None:
        with self._cond:
            self._evict_for(size)
            self._wait_locked(deadline, size)

    def _wait_locked(self, deadline: tuple[float, float], size: int) -> None:
        started, until = deadline
        now = self.clock.monotonic()
        if now >= until:
            self.counters.backpressure_timeouts += 1
            raise BackpressureTimeout(size, now - started)
        self._cond.wait(min(self.config.poll_interval, until - now))
        self.counters.backpressure_wait_seconds += self.clock.monotonic() - now

    def _evict_for(self, size: int) -> None:
        victims: list[bytes] = []
        freed = 0
        over_budget = self._used + self._inflight + size - self.budget
        under_floor = self.config.disk_free_floor - (self._disk_free() - self._inflight - size)
        need = max(over_budget, under_floor)
        for cid in self._lru:
            if freed >= need:
                break
            victims.append(cid)
            freed += self._sizes[cid]
        if victims:
            self._remove(victims)
            self.counters.evictions += len(victims)
            self.counters.evicted_bytes += freed

    def _remove(self, ids: list[bytes]) -> None:
        # Row first, then file: a crash in between leaves an orphan file,
        # which recovery sweeps, never a row pointing at nothing.
        self._db.execute("BEGIN")
        self._db.executemany("DELETE FROM chunks WHERE id = ?", [(c,) for c in ids])
        self._db.execute("COMMIT")
        for cid in ids:
            size = self._sizes.pop(cid)
            self._used -= size
            if cid in self._lru:
                del self._lru[cid]
            else:
                self._pinned -= size
            self._files.unlink(cid)

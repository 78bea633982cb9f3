"""The local store's space accounting: budget, disk-free floor, eviction, backpressure.

A mixin of `LocalStore` (store.py), split out to keep each module readable;
every method here runs with the store's condition held unless it says
otherwise. Bytes are counted three ways: `_used` (committed chunks),
`_inflight` (reserved by writers whose files are not committed yet — staged
files waiting for their group commit count here, so a batch can never
overrun the budget) and `_pinned` (committed, not yet in the backend).

LRU without a per-chunk structure in memory: `seq` in `pool.sqlite` is the
order (indexed with `durable`). A read of a durable chunk goes into a
bounded buffer (`_touch`); the buffer is written as new `seq` values when it
fills and before eviction picks victims, in a transaction that does not
wait for an fsync (`synchronous=NORMAL`: the order of a cache is not worth
one; the next durable commit carries it, a crash may forget the latest reads).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thur.sqlbatch import execute_values, in_lists

from .clock import Clock
from .errors import BackpressureTimeout
from .layout import ChunkFiles
from .segments import Loc, SegmentFiles

TOUCH_BATCH = 4096  # reads of durable chunks buffered before their new LRU order is written
EVICT_PAGE = 256  # LRU rows read per query while choosing victims
# Eviction frees what a write needs plus up to budget / 32, at most 64 MiB.
EVICT_STEP_DIVISOR = 32
EVICT_STEP_MAX = 64 << 20


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
    _wlock: threading.Lock
    _rlock: threading.Lock
    _tlock: threading.Lock
    _db: sqlite3.Connection
    _rdb: sqlite3.Connection
    _files: ChunkFiles
    _segs: SegmentFiles
    _disk_free: Callable[[], int]
    _touched: dict[bytes, None]
    _count: int
    _seq: int
    _used: int
    _pinned: int
    _inflight: int
    _writing: set[bytes]
    counters: SpaceCounters

    _lookup: Callable[[bytes], tuple[int, int, int | None, int | None] | None]  # reads.py

    def _write(self, work: Callable[[sqlite3.Connection], object]) -> None: ...

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
                if cid in self._writing:
                    self._cond.wait(self.config.poll_interval)
                    continue
                # Not being written, so a commit of it is over: the row is visible.
                if self._lookup(cid) is not None:
                    return False
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
        over_budget = self._used + self._inflight + size - self.budget
        under_floor = self.config.disk_free_floor - (self._disk_free() - self._inflight - size)
        need = max(over_budget, under_floor)
        if need <= 0:
            return
        self._flush_touches()
        # Past what is needed, go on up to a step of the budget: a full cache
        # then pays one eviction commit (an fsync, under `_cond`) per step,
        # not one per new chunk. Never past the step: small caches evict
        # exactly what they need.
        step = need + min(self.budget // EVICT_STEP_DIVISOR, EVICT_STEP_MAX)
        victims: list[bytes] = []
        freed = 0
        after = -1
        while freed < need:
            with self._rlock:
                page = self._rdb.execute(
                    "SELECT id, size, seq FROM chunks WHERE durable = 1 AND seq > ?"
                    " ORDER BY seq LIMIT ?",
                    (after, EVICT_PAGE),
                ).fetchall()
            if not page:
                break
            for cid, sz, _seq in page:
                if freed >= need and freed + sz > step:
                    break
                victims.append(bytes(cid))
                freed += sz
            after = page[-1][2]
            if len(page) < EVICT_PAGE:
                break
        if victims:
            n, freed = self._remove(victims)
            self.counters.evictions += n
            self.counters.evicted_bytes += freed

    def _remove(self, ids: list[bytes]) -> tuple[int, int]:
        """Delete these chunks' rows (committed), then their bytes; (chunks, bytes) removed.

        Row first, then bytes: a crash in between leaves unreferenced bytes,
        which recovery frees, never a row pointing at nothing. Ids without
        a row are left alone (their record may be a write in flight). A
        retired segment left without rows is unlinked.
        """
        if not ids:
            return 0, 0
        gone: list[tuple[bytes, int, int, int | None, int | None]] = []

        def delete(db: sqlite3.Connection) -> None:
            # Two statements per batch of ids, not two per chunk (sqlbatch.py).
            for marks, part in in_lists(ids):
                rows = db.execute(
                    f"SELECT id, size, durable, seg, off FROM chunks WHERE id IN ({marks})", part
                ).fetchall()
                db.execute(f"DELETE FROM chunks WHERE id IN ({marks})", part)
                gone.extend((bytes(r[0]), *r[1:]) for r in rows)

        with self._wlock:
            self._write(delete)
        freed = 0
        segs: set[int] = set()
        for cid, size, durable, seg, off in gone:
            freed += size
            self._used -= size
            self._count -= 1
            if not durable:
                self._pinned -= size
            if seg is None:
                self._files.unlink(cid)
            else:
                self._segs.release(Loc(seg, off, size))  # type: ignore[arg-type]
                segs.add(seg)
        for seg in sorted(segs):
            if self._segs.droppable(seg) and not self._seg_has_rows(seg):
                self._segs.drop(seg)
        return len(gone), freed

    def _seg_has_rows(self, seg: int) -> bool:
        with self._rlock:
            return bool(
                self._rdb.execute("SELECT 1 FROM chunks WHERE seg = ? LIMIT 1", (seg,)).fetchall()
            )

    # ---- LRU order (any thread; no lock held) --------------------------------

    def _touch(self, cid: bytes) -> None:
        with self._tlock:
            self._touched[cid] = None
            full = len(self._touched) >= TOUCH_BATCH
        if full:
            self._flush_touches()

    def _renumber(self, db: sqlite3.Connection, ids: list[bytes], *, unpin: bool) -> None:
        """Give each of `ids` the next seq, a few statements per batch (sqlbatch.py):
        the LRU bump of durable rows, or (`unpin`) the unpinning of pinned ones.
        An id with no such row spends a seq number, which is harmless (seq only
        orders). The caller holds `_wlock` inside a write transaction."""
        pairs = []
        for cid in ids:
            self._seq += 1
            pairs.append((cid, self._seq))
        was = 0 if unpin else 1
        execute_values(
            db,
            "UPDATE chunks SET durable = 1, seq = v.column2 FROM ({values}) AS v"
            f" WHERE chunks.id = v.column1 AND chunks.durable = {was}",
            pairs,
        )

    def _flush_touches(self) -> None:
        with self._tlock:
            ids, self._touched = list(self._touched), {}
        if not ids:
            return

        with self._wlock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._write(lambda db: self._renumber(db, ids, unpin=False))
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

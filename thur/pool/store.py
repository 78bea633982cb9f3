"""The local pool: a budgeted, content-addressed warm cache of chunks.

On disk, under `data_dir`::

    chunks/ab/cd/<64 hex>   one chunk file per chunk (see chunkfile.py)
    tmp/                    chunk files being written; emptied on open
    pool.sqlite             which chunks exist, their size, durable or pinned

Write order of one chunk (the invariant the recovery relies on):

1. payload written to tmp/, fsync'd;
2. renamed into chunks/…, the shard directory fsync'd;
3. row inserted as *pinned* (not yet durable in the backend) and committed;
4. only then does `put()` return (the chunk is acknowledged).

Later the uploader marks it *durable* (row update, committed) once its pack
and index are in the backend; only durable chunks may be evicted, least
recently used first. Eviction deletes the row first, then the file.

Recovery on open: tmp/ is emptied; a chunk file without a row is a write that
never got acknowledged and is swept; a durable row without a file is dropped
(the backend has it); a pinned row without a file is reported as lost in
`LocalStore.recovery` (it cannot happen without the disk lying about fsync).

Why sqlite3: it is in the stdlib, its WAL commits are atomic and durable with
`synchronous=FULL`, and the eviction and upload queries ("oldest pinned
chunks", "all durable chunks in LRU order") are indexed lookups over millions
of rows, which a hand-written append-only journal would need compaction and
its own index to match.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import chunkfile
from .chunkfile import Encoded
from .chunkid import chunk_id
from .clock import Clock, SystemClock
from .codec import CompressionPolicy, Compressor
from .errors import BackpressureTimeout, ChunkCorrupt, ChunkMissing
from .gc import RefGuard
from .layout import ChunkFiles
from .recovery import recover

GiB = 1 << 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
    id BLOB PRIMARY KEY,
    size INTEGER NOT NULL,      -- bytes of the chunk file
    durable INTEGER NOT NULL,   -- 0 pinned (not yet in the backend), 1 durable
    seq INTEGER NOT NULL        -- write order, then durable order: the LRU seed
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_state ON chunks(durable, seq);
"""
_SCHEMA_VERSION = "1"


@dataclass(slots=True)
class PoolConfig:
    """Where the pool lives and how much it may use.

    `budget_bytes=None` means auto: `auto_budget_fraction` of (free disk +
    what the pool already holds) at open, but never less than
    `min_budget_bytes`. Independently, a write never takes the file system's
    free space below `disk_free_floor`.
    """

    data_dir: Path
    budget_bytes: int | None = None
    auto_budget_fraction: float = 0.8
    min_budget_bytes: int = 1 * GiB
    disk_free_floor: int = 1 * GiB
    max_wait: float = 300.0  # backpressure: longest a writer waits for room
    poll_interval: float = 0.5  # re-check period while waiting (uploads notify too)
    fsync: bool = True
    compression: CompressionPolicy = field(default_factory=CompressionPolicy)


@dataclass(frozen=True, slots=True)
class PutResult:
    chunk_id: bytes
    plain_len: int
    stored: int  # bytes of the chunk file (0 when it was already present)
    new: bool


@dataclass(frozen=True, slots=True)
class PoolStats:
    chunks: int
    used_bytes: int
    budget_bytes: int
    pinned_bytes: int


def _statvfs_free(path: Path) -> Callable[[], int]:
    def free() -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    return free


class LocalStore:
    """The warm cache. Thread-safe; one instance per data_dir."""

    def __init__(
        self,
        config: PoolConfig,
        *,
        clock: Clock | None = None,
        disk_free: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.compressor = Compressor(config.compression)
        self.root = Path(config.data_dir)
        self._files = ChunkFiles(self.root, fsync=config.fsync)
        self._disk_free = disk_free or _statvfs_free(self.root)
        self._cond = threading.Condition()
        self._listeners: list[Callable[[], None]] = []
        self.guard = RefGuard()  # what a running GC must not sweep (see gc.py)
        self._db = sqlite3.connect(
            self.root / "pool.sqlite", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta VALUES('schema_version', ?)", (_SCHEMA_VERSION,)
        )
        self.recovery = recover(self._files, self._db)
        self._sizes: dict[bytes, int] = {}
        self._lru: OrderedDict[bytes, None] = OrderedDict()  # durable chunks only
        self._used = 0
        self._pinned = 0
        self._inflight = 0  # reserved for writes not yet on disk
        self._writing: set[bytes] = set()  # ids being written right now
        self._seq = 0
        for cid, size, durable, seq in self._db.execute(
            "SELECT id, size, durable, seq FROM chunks ORDER BY seq"
        ):
            self._sizes[cid] = size
            self._used += size
            self._seq = max(self._seq, seq)
            if durable:
                self._lru[cid] = None
            else:
                self._pinned += size
        self.budget = self._initial_budget()

    # ---- public API -------------------------------------------------------

    def put(self, data: bytes | bytearray | memoryview) -> PutResult:
        """Store a chunk (pinned until uploaded). Dedups by id.

        Blocks while the pool is full, up to `max_wait`, then raises
        BackpressureTimeout.
        """
        cid = chunk_id(data)
        self.guard.note((cid,))  # before the dedup check: see gc.py
        with self._cond:
            if cid in self._sizes:
                self._touch(cid)
                return PutResult(cid, len(data), 0, False)
        codec, payload = self.compressor.compress(data)
        stored = self.put_encoded(cid, Encoded(codec, len(data), payload), durable=False)
        return PutResult(cid, len(data), stored, stored > 0)

    def put_encoded(
        self, cid: bytes, enc: Encoded, *, durable: bool, max_wait: float | None = None
    ) -> int:
        """Store an already-encoded chunk; the caller vouches it is verified.

        `durable=True` is for chunks fetched from the backend. `max_wait`
        overrides the configured backpressure wait (0 for read-cache fills,
        which would rather not cache than stall a reader). Returns the bytes
        written, 0 when the chunk was already present.
        """
        raw = chunkfile.encode(enc)
        size = len(raw)
        wait = self.config.max_wait if max_wait is None else max_wait
        started = self.clock.monotonic()
        deadline = (started, started + wait)
        while True:
            if not self._reserve(cid, size, deadline):
                return 0
            try:
                self._files.write(cid, raw)
                break
            except BaseException as e:
                with self._cond:
                    self._inflight -= size
                    self._writing.discard(cid)
                    self._cond.notify_all()
                if not isinstance(e, OSError) or e.errno != errno.ENOSPC:
                    raise
                # The file system filled behind our back (another process):
                # treat it like a full budget and wait for room, never ENOSPC.
                self._wait_a_little(deadline, size)
        with self._cond:
            self._inflight -= size
            self._writing.discard(cid)
            self._cond.notify_all()
            self._seq += 1
            self._db.execute(
                "INSERT INTO chunks VALUES(?, ?, ?, ?)", (cid, size, int(durable), self._seq)
            )
            self._sizes[cid] = size
            self._used += size
            if durable:
                self._lru[cid] = None
            else:
                self._pinned += size
            listeners = list(self._listeners)
        if not durable:
            for notify in listeners:
                notify()
        return size

    def get(self, cid: bytes) -> bytes:
        """Return the verified plaintext; ChunkMissing or ChunkCorrupt otherwise."""
        enc = self.read_encoded(cid)
        plain = self.compressor.decompress(cid, enc.codec, enc.payload, enc.plain_len)
        if chunk_id(plain) != cid:
            raise ChunkCorrupt(cid, "BLAKE3 of the plaintext does not match the id")
        return plain

    def read_encoded(self, cid: bytes) -> Encoded:
        """The stored encoding (structurally checked, not hash-verified)."""
        with self._cond:
            if cid not in self._sizes:
                raise ChunkMissing(cid)
            self._touch(cid)
        try:
            raw = self._files.read(cid)
        except FileNotFoundError:
            raise ChunkMissing(cid) from None  # evicted between lookup and read
        return chunkfile.decode(cid, raw)

    def contains(self, cid: bytes) -> bool:
        with self._cond:
            return cid in self._sizes

    def is_durable(self, cid: bytes) -> bool:
        with self._cond:
            return cid in self._lru

    def pending(self, limit: int | None = None) -> list[tuple[bytes, int]]:
        """Pinned chunks (id, file size), oldest first."""
        with self._cond:
            rows = self._db.execute(
                "SELECT id, size FROM chunks WHERE durable = 0 ORDER BY seq LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        return [(bytes(r[0]), r[1]) for r in rows]

    def mark_durable(self, ids: Iterable[bytes]) -> None:
        """The backend now holds these chunks: unpin them (one transaction)."""
        with self._cond:
            todo = [c for c in ids if c in self._sizes and c not in self._lru]
            if not todo:
                return
            self._db.execute("BEGIN")
            for cid in todo:
                self._seq += 1
                self._db.execute(
                    "UPDATE chunks SET durable = 1, seq = ? WHERE id = ?", (self._seq, cid)
                )
            self._db.execute("COMMIT")
            for cid in todo:
                self._lru[cid] = None
                self._pinned -= self._sizes[cid]
            self._cond.notify_all()

    def discard(self, cid: bytes) -> None:
        """Drop a local copy (e.g. a corrupt durable chunk about to be re-fetched)."""
        with self._cond:
            if cid in self._sizes:
                self._remove([cid])
                self._cond.notify_all()

    def discard_many(self, ids: Iterable[bytes]) -> tuple[int, int]:
        """GC: drop these chunks (one transaction); returns (chunks, bytes) freed."""
        with self._cond:
            todo = [c for c in dict.fromkeys(ids) if c in self._sizes and c not in self._writing]
            freed = sum(self._sizes[c] for c in todo)
            if todo:
                self._remove(todo)
                self._cond.notify_all()
        return len(todo), freed

    def scan(self, batch: int) -> Iterable[list[tuple[bytes, int, int]]]:
        """Every chunk as (id, file size, seq), a page of `batch` rows at a time."""
        after = b""
        while True:
            with self._cond:
                rows = self._db.execute(
                    "SELECT id, size, seq FROM chunks WHERE id > ? ORDER BY id LIMIT ?",
                    (after, batch),
                ).fetchall()
            if not rows:
                return
            yield [(bytes(r[0]), r[1], r[2]) for r in rows]
            after = bytes(rows[-1][0])

    @property
    def seq(self) -> int:
        """The write-order counter: rows with a larger seq were written or unpinned later."""
        with self._cond:
            return self._seq

    def add_listener(self, notify: Callable[[], None]) -> None:
        """Call `notify()` (outside the pool's lock) after each new pinned chunk."""
        with self._cond:
            self._listeners.append(notify)

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(len(self._sizes), self._used, self.budget, self._pinned)

    def close(self) -> None:
        with self._cond:
            self._db.close()

    # ---- space ------------------------------------------------------------

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
                self._wait_locked(deadline, size)

    def _wait_a_little(self, deadline: tuple[float, float], size: int) -> None:
        with self._cond:
            self._evict_for(size)
            self._wait_locked(deadline, size)

    def _wait_locked(self, deadline: tuple[float, float], size: int) -> None:
        started, until = deadline
        now = self.clock.monotonic()
        if now >= until:
            raise BackpressureTimeout(size, now - started)
        self._cond.wait(min(self.config.poll_interval, until - now))

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

    def _touch(self, cid: bytes) -> None:
        if cid in self._lru:
            self._lru.move_to_end(cid)

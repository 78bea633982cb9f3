"""The local pool: a budgeted, content-addressed warm cache of chunks.

On disk, under `data_dir`::

    segments/<16 hex>.seg   chunks appended as records (see segments.py)
    chunks/ab/cd/<64 hex>   one file per chunk: pools of schema 1 (read only)
    tmp/                    leftovers of schema 1 writes; emptied on open
    pool.sqlite             which chunks exist, where, their size, durable or pinned

Write order of one chunk (the invariant the recovery relies on):

1. its record appended to an open segment (in the writer's thread; the
   writer then goes on with its next chunk);
2. group commit (commit.py, one thread) for every chunk that reached this
   point: the distinct segments of the batch fdatasync'd (and the segments
   directory, when one of them is new), then the rows inserted as *pinned*
   (not yet durable in the backend) in one transaction, committed;
3. only then does `put()` return / the `submit()` future resolve (the
   chunk is acknowledged).

Step 1 runs in the writers' threads (`submit()` / `put_many()` workers, or
callers of `put()`), each appending to its own segment; step 2 is one flush
per segment and one sqlite commit per batch. Hashing and compression also
run in the writers' threads (BLAKE3 and zstd release the GIL).

What is in the pool is what is committed in `pool.sqlite`: lookups read it
(a second connection, so a reader never waits for a commit), and nothing
per chunk is kept in memory (only the chunks being written, and a bounded
buffer of LRU touches). A row is committed only after its record is
durable, so a reader that finds a row finds the bytes; a chunk being written
is invisible until then.

Later the uploader marks it *durable* (row update, committed) once its pack
and index are in the backend; only durable chunks may be evicted, least
recently used first (`seq`: reads move a durable chunk to the end, batched,
see space.py). Eviction deletes the row first, then frees the bytes.

Recovery on open (recovery.py): bytes no row points at are freed; a durable
row whose bytes are missing is dropped (the backend has it); a pinned row
whose bytes are missing is reported as lost in `LocalStore.recovery` (it
cannot happen without the disk lying about fsync).

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
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path

from thur.sqlbatch import execute_values, in_lists

from . import chunkfile
from .chunkfile import Encoded
from .chunkid import chunk_id
from .clock import Clock, SystemClock
from .codec import CompressionPolicy, Compressor
from .commit import GroupCommit
from .gc import RefGuard
from .layout import ChunkFiles
from .reads import ReadMixin
from .recovery import recover
from .schema import open_schema
from .segments import Loc, SegmentFiles, record_size
from .space import SpaceCounters, SpaceMixin
from .submit import Data, SkipIf, Submitter, default_put_workers

GiB = 1 << 30


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
    # submit()/put_many(): threads that hash, compress and write chunks (zstd
    # and BLAKE3 release the GIL; extra threads cover fsync waits) ...
    put_workers: int = field(default_factory=default_put_workers)
    # ... and the most plaintext bytes accepted but not yet stored: bounds
    # memory, and makes a fast producer wait (like backpressure, never drop).
    submit_window: int = 32 << 20


@dataclass(frozen=True, slots=True)
class PutResult:
    chunk_id: bytes
    plain_len: int
    stored: int  # bytes of the chunk file (0 when it was already present)
    new: bool


@dataclass(frozen=True, slots=True)
class _Staged:
    """A record appended to a segment; neither it nor its row is durable yet."""

    cid: bytes
    durable: bool
    loc: Loc

    @property
    def size(self) -> int:
        return self.loc.size


@dataclass(frozen=True, slots=True)
class PoolStats:
    chunks: int
    used_bytes: int
    budget_bytes: int
    pinned_bytes: int
    # Since open (SpaceCounters): what /metrics reports.
    counters: SpaceCounters = field(default_factory=SpaceCounters)


def _statvfs_free(path: Path) -> Callable[[], int]:
    def free() -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    return free


class LocalStore(ReadMixin, SpaceMixin):
    """The warm cache. Thread-safe; one instance per data_dir.

    Locks, always taken in this order and never the other way: `_cond`
    (byte counters, chunks being written; held briefly, except by eviction
    and discards, which commit their deletes under it), then `_wlock` (the
    writing sqlite connection). `_rlock` guards the reading connection and
    `_tlock` the touch buffer; neither is held while taking another.
    Commits of new chunks take `_wlock` alone and `_cond` afterwards, so
    readers and `stats()` never wait for a commit's fsync.
    """

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
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._tlock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self.guard = RefGuard()  # what a running GC must not sweep (see gc.py)
        db_path = self.root / "pool.sqlite"
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        open_schema(self._db)
        (first,) = self._db.execute(
            "SELECT coalesce(max(seg), 0) + 1 FROM chunks WHERE seg IS NOT NULL"
        ).fetchone()
        self._segs = SegmentFiles(self.root, fsync=config.fsync, first_number=first)
        self.recovery = recover(self._files, self._segs, self._db)
        # Lookups: a second connection sees what is committed, never waits for a commit.
        self._rdb = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._rdb.execute("PRAGMA query_only=1")
        count, used, pinned, seq = self._db.execute(
            "SELECT count(*), coalesce(sum(size), 0),"
            " coalesce(sum(CASE WHEN durable = 0 THEN size ELSE 0 END), 0),"
            " coalesce(max(seq), 0) FROM chunks"
        ).fetchone()
        self._count: int = count
        self._used: int = used
        self._pinned: int = pinned
        self._seq: int = seq  # guarded by _wlock
        self._inflight = 0  # reserved for writes not yet committed
        self._writing: set[bytes] = set()  # ids being written right now
        self._touched: dict[bytes, None] = {}  # reads of durable chunks not yet in `seq`
        self.counters = SpaceCounters()
        self.budget = self._initial_budget()
        self._committer: GroupCommit[_Staged] = GroupCommit(self._commit_staged)
        self._submitter = Submitter(config.put_workers, config.submit_window)

    # ---- public API -------------------------------------------------------

    def put(self, data: Data, *, skip_if: SkipIf | None = None) -> PutResult:
        """Store a chunk (pinned until uploaded); returns once it is durable. Dedups by id.

        `skip_if(cid)` true means "stored elsewhere already" (the tier passes
        its pack index): the chunk is then not stored. Blocks while the pool
        is full, up to `max_wait`, then raises BackpressureTimeout. Safe to
        call from many threads: concurrent puts share one commit (see above).
        """
        r = self._put_begin(data, skip_if=skip_if)
        return r.result() if isinstance(r, Future) else r

    def _put_begin(
        self, data: Data, *, skip_if: SkipIf | None = None
    ) -> PutResult | Future[PutResult]:
        """`put()` up to the group commit: a result, or a future resolved by the commit."""
        if type(data) is not bytes:
            # Hash and compress one immutable copy: a caller changing its
            # buffer meanwhile must not leave a payload that decodes to
            # something other than what the id hashes (the file is SEALED).
            data = bytes(data)
        cid = chunk_id(data)
        n = len(data)
        self.guard.note((cid,))  # before the dedup check: see gc.py
        found = self._lookup(cid)
        if found is not None:
            if found[1]:
                self._touch(cid)
            self._count_put(n, new=False)
            return PutResult(cid, n, 0, False)
        if skip_if is not None and skip_if(cid):
            self._count_put(n, new=False)
            return PutResult(cid, n, 0, False)
        codec, payload = self.compressor.compress(data)
        # SEALED: this payload was produced here from the plaintext just hashed to cid.
        staged = self._stage(
            cid, Encoded(codec, n, payload), durable=False, sealed=True, max_wait=None
        )
        if staged is None:  # another writer stored it meanwhile
            self._count_put(n, new=False)
            return PutResult(cid, n, 0, False)
        out: Future[PutResult] = Future()

        def committed(f: Future[None]) -> None:
            e = f.exception()
            if e is not None:
                out.set_exception(e)
                return
            self._count_put(n, new=True)
            out.set_result(PutResult(cid, n, staged.size, True))

        self._enqueue(staged).add_done_callback(committed)
        return out

    def _count_put(self, plain_len: int, *, new: bool) -> None:
        # Counted once the put succeeded, so logical = unique + deduplicated plaintext.
        with self._cond:
            self.counters.logical_bytes += plain_len
            if new:
                self.counters.unique_bytes += plain_len
            else:
                self.counters.dedup_hits += 1

    def submit(self, data: Data, *, skip_if: SkipIf | None = None) -> Future[PutResult]:
        """`put()` on the pool's worker threads; the future resolves once durable.

        Waits (does not fail) while `submit_window` bytes are in flight.
        Results come back per chunk, in any order: a caller that needs stream
        order keeps its futures in a queue (as the tape stream does).
        """
        return self._submitter.submit(self._put_begin, data, skip_if)

    def put_many(self, chunks: Iterable[Data], *, skip_if: SkipIf | None = None) -> list[PutResult]:
        """Store many chunks in parallel; results in input order, all durable.

        If any chunk fails, the first error is raised after every chunk has
        finished; the others may be stored (a retry of the batch is harmless:
        storage is by content).
        """
        futures = [self.submit(c, skip_if=skip_if) for c in chunks]
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:
            raise errors[0]
        return [f.result() for f in futures]

    def put_encoded(
        self, cid: bytes, enc: Encoded, *, durable: bool, max_wait: float | None = None
    ) -> int:
        """Store an already-encoded chunk; the caller vouches it is verified.

        `durable=True` is for chunks fetched from the backend. `max_wait`
        overrides the configured backpressure wait (0 for read-cache fills,
        which would rather not cache than stall a reader). Returns the bytes
        written, 0 when the chunk was already present. The file is not
        SEALED (chunkfile.py): `read_checked` decodes and re-hashes it.
        """
        staged = self._stage(cid, enc, durable=durable, sealed=False, max_wait=max_wait)
        if staged is None:
            return 0
        self._enqueue(staged).result()
        return staged.size

    def _enqueue(self, staged: _Staged) -> Future[None]:
        """Queue a staged chunk for the group commit; a failed commit leaves no trace."""

        def settle(f: Future[None]) -> None:
            # Runs before any later callback, so a writer told of the failure
            # finds it cleaned up. Not acknowledged: without its row the
            # record is garbage; free its bytes now.
            if f.exception() is not None:
                self._segs.release(staged.loc)
                self._release([(staged.cid, staged.size)])
            self._segs.settled(staged.loc)

        fut = self._committer.enqueue(staged)
        fut.add_done_callback(settle)
        return fut

    def _stage(
        self, cid: bytes, enc: Encoded, *, durable: bool, sealed: bool, max_wait: float | None
    ) -> _Staged | None:
        """Reserve room and append the chunk's record; None if the chunk is already there."""
        size = record_size(chunkfile.file_size(enc))
        parts = (chunkfile.header(enc, sealed=sealed), enc.payload)
        wait = self.config.max_wait if max_wait is None else max_wait
        started = self.clock.monotonic()
        deadline = (started, started + wait)
        while True:
            if not self._reserve(cid, size, deadline):
                return None
            try:
                loc = self._segs.append(cid, parts)
            except BaseException as e:
                self._release([(cid, size)])
                if not isinstance(e, OSError) or e.errno != errno.ENOSPC:
                    raise
                # The file system filled behind our back (another process):
                # treat it like a full budget and wait for room, never ENOSPC.
                self._wait_a_little(deadline, size)
                continue
            return _Staged(cid, durable, loc)

    def _commit_staged(self, batch: list[_Staged]) -> None:
        """Group commit (its own thread): segments, then the rows, then memory.

        Only `_wlock` is held for the sqlite COMMIT: lookups use the other
        connection and see the rows once committed, which is after every
        record of the batch (and a new segment's name) is durable.
        """
        self._segs.sync({st.loc.seg for st in batch})
        with self._wlock:
            rows = []
            for st in batch:
                self._seq += 1
                loc = st.loc
                rows.append((st.cid, loc.size, int(st.durable), self._seq, loc.seg, loc.off))
            self._write(lambda db: execute_values(db, "INSERT INTO chunks {values}", rows))
        pinned = False
        with self._cond:
            for st in batch:
                self._inflight -= st.size
                self._writing.discard(st.cid)
                self._used += st.size
                self._count += 1
                if not st.durable:
                    self._pinned += st.size
                    pinned = True
            self._cond.notify_all()
            listeners = list(self._listeners) if pinned else []
        for notify in listeners:
            notify()

    def _release(self, items: list[tuple[bytes, int]]) -> None:
        with self._cond:
            for cid, size in items:
                self._inflight -= size
                self._writing.discard(cid)
            self._cond.notify_all()

    def pending(self, limit: int | None = None) -> list[tuple[bytes, int]]:
        """Pinned chunks (id, file size), oldest first."""
        with self._rlock:
            rows = self._rdb.execute(
                "SELECT id, size FROM chunks WHERE durable = 0 ORDER BY seq LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        return [(bytes(r[0]), r[1]) for r in rows]

    def mark_durable(self, ids: Iterable[bytes]) -> None:
        """The backend now holds these chunks: unpin them (one transaction)."""
        todo = list(dict.fromkeys(ids))
        if not todo:
            return
        unpinned = 0

        def unpin(db: sqlite3.Connection) -> None:
            # A few statements per batch of ids, not one per chunk (sqlbatch.py).
            nonlocal unpinned
            for marks, part in in_lists(todo):
                (size,) = db.execute(
                    f"SELECT coalesce(sum(size), 0) FROM chunks"
                    f" WHERE durable = 0 AND id IN ({marks})",
                    part,
                ).fetchone()
                unpinned += size
                self._renumber(db, part, unpin=True)

        with self._wlock:
            self._write(unpin)
        if unpinned:
            with self._cond:
                self._pinned -= unpinned
                self._cond.notify_all()

    def discard(self, cid: bytes) -> None:
        """Drop a local copy (e.g. a corrupt durable chunk about to be re-fetched)."""
        self.discard_many([cid])

    def discard_many(self, ids: Iterable[bytes]) -> tuple[int, int]:
        """GC: drop these chunks (one transaction); returns (chunks, bytes) freed."""
        with self._cond:
            todo = [c for c in dict.fromkeys(ids) if c not in self._writing]
            n, freed = self._remove(todo)
            if n:
                self._cond.notify_all()
        return n, freed

    def scan(self, batch: int) -> Iterable[list[tuple[bytes, int, int]]]:
        """Every chunk as (id, file size, seq), a page of `batch` rows at a time."""
        after = b""
        while True:
            with self._rlock:
                rows = self._rdb.execute(
                    "SELECT id, size, seq FROM chunks WHERE id > ? ORDER BY id LIMIT ?",
                    (after, batch),
                ).fetchall()
            if not rows:
                return
            yield [(bytes(r[0]), r[1], r[2]) for r in rows]
            after = bytes(rows[-1][0])

    @property
    def seq(self) -> int:
        """The write-order counter: rows with a larger seq were written, unpinned or read later."""
        with self._wlock:
            return self._seq

    def add_listener(self, notify: Callable[[], None]) -> None:
        """Call `notify()` (outside the pool's lock) after each new pinned chunk."""
        with self._cond:
            self._listeners.append(notify)

    def stats(self) -> PoolStats:
        with self._cond:
            counters = replace(self.counters)  # a copy: the caller reads it unlocked
            return PoolStats(self._count, self._used, self.budget, self._pinned, counters)

    def commit_stats(self) -> tuple[int, int]:
        """(group commits run, chunks they committed) since open."""
        return self._committer.batches, self._committer.items

    def close(self) -> None:
        self._submitter.close()  # lets submitted puts finish staging first ...
        self._committer.close()  # ... and their commits
        self._segs.close()
        self._flush_touches()
        with self._wlock, self._rlock:
            self._rdb.close()
            self._db.close()

    def _write(self, work: Callable[[sqlite3.Connection], object]) -> None:
        """One write transaction on the writing connection; the caller holds `_wlock`."""
        self._db.execute("BEGIN")
        try:
            work(self._db)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

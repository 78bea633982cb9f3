"""Liveness: who references which chunks, and the local half of mark-and-sweep.

Owners (cartridges, volumes, snapshots) *declare* their chunks by streaming
ids through `ChunkOwner.chunk_ids()`; nothing here keeps a reference count.
A GC run is:

1. `RefGuard.begin(marks)`: from now on every `put()` (dedup hit or not) and
   every `retain()` of a chunk adds its id to the mark set, so a reference
   created while the GC runs can never be swept;
2. wait the *grace period*: a `put()` that returned just before step 1 gives
   its owner this long to make the id visible to `chunk_ids()`;
3. mark: stream every owner's ids into the mark set (`MarkSet`, an sqlite
   file: memory does not grow with the number of chunks, only the file does);
4. sweep: a chunk is removed only if it is unmarked *and* it was already in
   the pool when the run began (`LocalStore.seq` at step 1). The check and the
   removal happen under the guard's lock, which `note()` also takes *before*
   a writer looks for an existing copy: either the writer's note lands first
   (the chunk is kept) or the removal does (the writer stores a fresh copy).

The bucket half (packs, index files, repack) is `thur.cloud.gc`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .store import LocalStore

BATCH = 4096  # ids per sqlite round trip: big enough to be fast, small in memory
_IN_LIMIT = 500  # ids per `IN (...)` query (sqlite's variable limit is far above)


@runtime_checkable
class ChunkOwner(Protocol):
    """Something that references chunks: a cartridge, a volume, a snapshot.

    `chunk_ids()` yields every chunk id the owner references, duplicates
    allowed, in any order, *including* references not yet committed to the
    owner's own metadata (an in-flight tape record). It should stream (e.g.
    from the cartridge's on-disk record index) rather than build a list: the
    mark phase consumes it lazily. An owner that gains a reference without
    calling `put()` (copying a cartridge, cloning a volume) must call
    `retain(ids)` on the pool first.
    """

    @property
    def name(self) -> str: ...

    def chunk_ids(self) -> Iterable[bytes]: ...


class MarkSet:
    """A set of chunk ids on disk (scratch sqlite, rebuilt every run).

    Durability is off on purpose: after a crash the run is simply redone.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)  # leftovers of a crashed run
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE marked(id BLOB PRIMARY KEY) WITHOUT ROWID")
        self._lock = threading.Lock()

    @property
    def db(self) -> sqlite3.Connection:
        """The scratch database, for other scratch tables of the same run."""
        return self._db

    def add(self, ids: Iterable[bytes]) -> int:
        """Mark ids (consumed lazily, in batches); returns how many were read."""
        n = 0
        batch: list[tuple[bytes]] = []
        for cid in ids:
            batch.append((bytes(cid),))
            if len(batch) >= BATCH:
                n += self._insert(batch)
                batch = []
        return n + self._insert(batch)

    def _insert(self, rows: list[tuple[bytes]]) -> int:
        if rows:
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR IGNORE INTO marked VALUES(?)", rows)
                self._db.execute("COMMIT")
        return len(rows)

    def marked(self, ids: Sequence[bytes]) -> set[bytes]:
        """The subset of `ids` that is marked."""
        out: set[bytes] = set()
        with self._lock:
            for i in range(0, len(ids), _IN_LIMIT):
                part = ids[i : i + _IN_LIMIT]
                q = f"SELECT id FROM marked WHERE id IN ({','.join('?' * len(part))})"
                out.update(bytes(r[0]) for r in self._db.execute(q, part))
        return out

    def __contains__(self, cid: bytes) -> bool:
        return bool(self.marked([cid]))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM marked").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self.path.unlink(missing_ok=True)


class RefGuard:
    """Keeps chunks referenced *during* a GC run out of its sweep.

    Costs one attribute read per `put()` when no GC runs. While one runs,
    noted ids are buffered and written to the mark set in batches, so a long
    run under heavy ingest does not grow memory.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: MarkSet | None = None
        self._buffer: list[bytes] = []

    @property
    def active(self) -> bool:
        return self._marks is not None

    def begin(self, marks: MarkSet) -> None:
        with self._lock:
            if self._marks is not None:
                raise RuntimeError("a GC run is already in progress")
            self._marks = marks
            self._buffer = []

    def end(self) -> None:
        with self._lock:
            self._marks = None
            self._buffer = []

    def note(self, ids: Iterable[bytes]) -> None:
        """Called by writers *before* they look for an existing copy."""
        if self._marks is None:
            return
        with self._lock:
            if self._marks is None:
                return
            self._buffer.extend(ids)
            if len(self._buffer) >= BATCH:
                self._spill()

    def _spill(self) -> None:
        assert self._marks is not None
        self._marks.add(self._buffer)
        self._buffer = []

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclude a GC commit (whether or not a run is active): for cache fills."""
        with self._lock:
            yield

    @contextlib.contextmanager
    def hold(self) -> Iterator[MarkSet]:
        """Block writers' notes; yield the up-to-date mark set.

        Decide and remove inside one `with`: that is what makes the sweep
        atomic with respect to concurrent writers.
        """
        with self._lock:
            if self._marks is None:
                raise RuntimeError("no GC run in progress")
            self._spill()
            yield self._marks


@dataclass(slots=True)
class LocalSweep:
    chunks: int = 0
    bytes: int = 0
    kept_young: int = 0  # unmarked but written after the run began


def sweep_local(
    store: LocalStore, guard: RefGuard, began_seq: int, *, dry_run: bool = False
) -> LocalSweep:
    """Remove every unmarked chunk that existed when the run began.

    Pinned (never uploaded) and durable chunks alike: a durable chunk's
    bucket copy is the bucket sweep's business; its cached copy only costs
    budget. Pages through the store so memory stays bounded.
    """
    out = LocalSweep()
    for rows in store.scan(BATCH):
        with guard.hold() as marks:
            old = [cid for cid, _size, seq in rows if seq <= began_seq]
            out.kept_young += len(rows) - len(old)
            live = marks.marked(old)
            dead = [cid for cid in old if cid not in live]
            if dry_run:
                sizes = {cid: size for cid, size, _seq in rows}
                out.chunks += len(dead)
                out.bytes += sum(sizes[c] for c in dead)
            else:
                n, freed = store.discard_many(dead)
                out.chunks += n
                out.bytes += freed
    return out

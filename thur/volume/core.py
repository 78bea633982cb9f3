"""The machinery under `PoolVolume`: pages, the cache, write-back and fences.

Page p covers bytes [p x page_size, (p + 1) x page_size) of the volume. Its
content lives in one of three places, newest first: the RAM cache (dirty),
the pool (a chunk named by the page-table entry), or nowhere (unmapped:
zeros). A page of zeros is never stored: writing it back clears the entry.

Write-back of a set of pages (`_snapshot` -> `_store` -> `_install`):

1. under the volume lock, copy each dirty page and note its generation; the
   page joins `_inflight` (one write-back per page at a time, so entries of a
   page are written in the order its contents were made);
2. without the lock (background) or with it (a writer making room, a fence):
   `put_many` the copies into the pool; each chunk is durable when it returns;
3. under the lock, write each page's entry (not fsync'd) and mark the page
   clean if it did not change meanwhile.

A fence (`flush()`, FUA) writes back, then fdatasyncs the table: every entry
written so far is durable, and every chunk it names was durable before the
entry was written. So after a crash each entry names either the page's
content at some write-back or its previous entry, never a chunk that is not
there; and after a fence nothing acknowledged before it is lost.

Between fences the journal (journal.py) holds every acknowledged change:
appended before the command returns, fdatasync'd before any entry is written,
replayed when the volume opens. A full fence starts a new journal epoch.

Threads: the SBC engine's (commands, serialised per LU by the ring), the
admin socket's, the store's replicator and GC, and one background writer per
volume. Everything that touches the cache or the table takes `_lock`;
background write-back drops it while the pool stores the chunks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from thur.pool import ChunkMissing, PutResult, as_model_error
from thur.volume.cache import PageCache
from thur.volume.journal import Journal, Record
from thur.volume.manifest import VolumeManifest, load_manifest
from thur.volume.protocol import (
    BackendFailure,
    Backpressure,
    MediumCorrupt,
    OutOfRange,
    VolumeError,
    WriteProtected,
)
from thur.volume.table import PageTable

log = logging.getLogger(__name__)
MiB = 1 << 20
MANIFEST = "volume.json"
TABLE = "pages.table"


class VolumePool(Protocol):
    """What a volume needs from the pool (`thur.cloud.TieredPool`)."""

    def put_many(self, chunks: Iterable[bytes]) -> list[PutResult]: ...
    def get(self, cid: bytes) -> bytes: ...
    def retain(self, ids: Iterable[bytes]) -> None: ...
    def flush(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class VolumeConfig:
    """Tuning of the page cache and write-back (per volume)."""

    cache_bytes: int = 64 * MiB
    # Background write-back starts when dirty pages exceed this share of the
    # budget, so a writer rarely has to write back itself.
    writeback_high: float = 0.5
    writeback_batch: int = 8 * MiB  # bytes per put_many batch (bounds the copies)
    dirty_expire: float = 5.0  # a dirty page older than this is written back
    writeback_interval: float = 1.0
    background: bool = True
    fsync: bool = True
    # The journal's size bound: past it the background writer checkpoints (writes back
    # the pages dirty then, drops the old records), so replay after a crash stays
    # short; at twice the bound (or without a background writer) a writer fences.
    journal_bytes: int = 256 * MiB


def volume_error(e: BaseException) -> VolumeError:
    """The one place pool and disk failures become the volume's typed errors."""
    return as_model_error(
        e, VolumeError, backpressure=Backpressure, corrupt=MediumCorrupt, failure=BackendFailure
    )


Snap = tuple[int, int, bytes]  # page, generation, content


class VolumeCore:
    def __init__(
        self,
        path: Path,
        pool: VolumePool,
        config: VolumeConfig | None = None,
        *,
        on_change: Callable[[VolumeCore, Sequence[int] | None], None] | None = None,
        on_upload: Callable[[VolumeCore], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.pool = pool
        self.config = config or VolumeConfig()
        self._m: VolumeManifest = load_manifest(self.path / MANIFEST)
        # Replaced (never mutated) at each manifest change, so the replicator reads
        # it without the volume lock (a fence may be waiting on the replicator).
        self._m_json: dict[str, Any] = self._m.to_json()
        ps = self._m.page_size
        self._ps = ps
        self._bpp = ps // self._m.block_size  # blocks per page
        self._zero = bytes(ps)
        self.table = PageTable(self.path / TABLE, ps, fsync=self.config.fsync)
        # At least a few pages, or one multi-page write could not make room.
        self.cache = PageCache(max(self.config.cache_bytes, 4 * ps), ps)
        self._on_change = on_change
        self._on_upload = on_upload
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._inflight: set[int] = set()
        self._closed = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._journal = Journal(self.path, fsync=self.config.fsync)
        # A checkpoint in progress: page -> generation it must be written back at
        # (or past) before the retired journal files may go.
        self._ckpt: dict[int, int] | None = None
        # Chunks that replayed SET records named: see _load.
        self._replayed_ids: set[bytes] | None = None
        try:
            self._recover()
        except BaseException:
            self._journal.close()
            self.table.close()
            raise
        if self.config.background:
            self._thread = threading.Thread(
                target=self._run, name=f"thur-vol-{self._m.name}", daemon=True
            )
            self._thread.start()

    # ---- the journal -------------------------------------------------------------

    def _recover(self) -> None:
        """Replay what the last run acknowledged after its last full fence, then fence."""
        if self._journal.end == 0 and not self._journal.retired:
            return
        count = 0
        with self._lock:
            self._replayed_ids = set()
            try:
                for record in self._journal.records():
                    self._redo(record)
                    count += 1
                # Local only: the bucket may be down, and the store is still opening us.
                self._fence(None, upload=False)
            except Exception as e:
                raise volume_error(e) from e
            finally:
                self._replayed_ids = None
        if count:
            log.info("volume %s: replayed %d journal records", self._m.name, count)

    def _redo(self, record: Record) -> None:
        """Apply one journal record to the cache or table (the volume's command logic)."""
        raise NotImplementedError

    def _journaled(self) -> None:
        """After a record is appended: keep the journal within its bound."""
        bound, j = self.config.journal_bytes, self._journal
        if j.total > 2 * bound or (self._thread is None and j.end > bound):
            self._fence(None, upload=False)  # our own housekeeping, not a host's fence
        elif j.end > bound:
            self._wake.set()  # the background writer checkpoints

    def _checkpoint_begin(self) -> None:
        """Retire the journal; remember the pages whose write-back covers it. Locked."""
        self._journal.retire()
        self._ckpt = {p: pg.gen for p in self.cache.dirty_pages() if (pg := self.cache.peek(p))}

    def _checkpoint_covered(self, page: int, gen: int | None) -> None:
        """A page's entry now holds its content at `gen` (None: replaced outright)."""
        ckpt = self._ckpt
        if ckpt is not None and page in ckpt and (gen is None or gen >= ckpt[page]):
            del ckpt[page]

    def _checkpoint_end(self) -> None:
        """Every retired record is in the table: sync it, drop the files. Locked."""
        self.table.sync()
        self._journal.drop_retired()
        self._ckpt = None

    # ---- checks ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendFailure(f"volume {self._m.name} is closed")

    def _check_range(self, lba: int, blocks: int) -> None:
        if lba < 0 or blocks < 0 or lba + blocks > self._m.num_blocks:
            raise OutOfRange(
                f"blocks [{lba}, {lba + blocks}) outside volume of {self._m.num_blocks}"
            )

    def _check_writable(self) -> None:
        self._check_open()
        if self._m.write_protected:
            raise WriteProtected(self._m.name)

    # ---- pages -----------------------------------------------------------------

    def _load(self, page: int) -> bytes:
        """A page's content from the table and the pool (not the cache)."""
        cid = self.table.get(page)
        if cid is None:
            return self._zero
        try:
            data = self.pool.get(cid)
        except ChunkMissing:
            # Replay may pass through a page an old SET record pointed at a chunk that
            # a later record (also replayed) overwrote and GC then swept: its content
            # is about to be replaced. A chunk the table named on its own is corruption.
            if self._replayed_ids is None or cid not in self._replayed_ids:
                raise
            return self._zero
        if len(data) != self._ps:
            raise MediumCorrupt(f"page {page}: chunk {cid.hex()} holds {len(data)} bytes")
        return data

    def _page(self, page: int) -> bytes | bytearray:
        """Current content of a page; cached as clean if that costs no write-back."""
        pg = self.cache.get(page)
        if pg is not None:
            return pg.data
        data = self._load(page)
        if data is not self._zero:
            while not self.cache.room_for(1) and self.cache.evict_clean():
                pass
            if self.cache.room_for(1):
                self.cache.insert(page, bytearray(data))
        return data

    def _apply(self, page: int, start: int, data: bytes | memoryview) -> None:
        """Put `data` at byte `start` of a page, in the cache (dirty)."""
        pg = self.cache.get(page)
        if pg is None:
            whole = start == 0 and len(data) == self._ps
            # Read-modify-write only when the page is not cached (and partial).
            base = bytearray(data) if whole else bytearray(self._load(page))
            self._make_room(1)
            pg = self.cache.insert(page, base)
            if whole:
                self.cache.modified(page, time.monotonic())
                return
        pg.data[start : start + len(data)] = data
        self.cache.modified(page, time.monotonic())

    def _make_room(self, pages: int) -> None:
        """Evict clean pages, then write back the oldest dirty ones (the caller's
        thread: this is where backpressure reaches a writer)."""
        batch = max(1, self.config.writeback_batch // self._ps)
        while not self.cache.room_for(pages):
            if self.cache.evict_clean():
                continue
            victims = self.cache.oldest_dirty(batch, self._inflight)
            if victims:
                self._writeback(victims)
            elif self._inflight:
                self._cond.wait()  # the background writer holds them: it will finish
            else:
                return  # nothing left to free: tolerate the overshoot of this one page
        if self.cache.dirty_bytes > self.cache.budget * self.config.writeback_high:
            self._wake.set()

    # ---- write-back ------------------------------------------------------------

    def _snapshot(self, pages: Iterable[int]) -> list[Snap]:
        snaps = []
        for page in dict.fromkeys(pages):  # twice in one snapshot would wait for itself
            while page in self._inflight:
                self._cond.wait()
            pg = self.cache.peek(page)
            if pg is not None and pg.dirty:
                snaps.append((page, pg.gen, bytes(pg.data)))
                self._inflight.add(page)
        return snaps

    def _store(self, snaps: list[Snap]) -> list[bytes | None]:
        data = [s[2] for s in snaps if s[2] != self._zero]
        try:
            results = iter(self.pool.put_many(data) if data else [])
        except BaseException as e:
            with self._cond:
                self._inflight.difference_update(s[0] for s in snaps)
                self._cond.notify_all()
            raise volume_error(e) from e
        return [None if s[2] == self._zero else next(results).chunk_id for s in snaps]

    def _install(self, snaps: list[Snap], ids: list[bytes | None]) -> None:
        try:
            self._journal.sync()  # write-ahead: records before the entries naming them
            for (page, gen, _), cid in zip(snaps, ids, strict=True):
                self.table.set(page, cid)
                self.cache.cleaned(page, gen)
                self._checkpoint_covered(page, gen)
        except OSError as e:
            raise volume_error(e) from e
        finally:
            self._inflight.difference_update(s[0] for s in snaps)
            self._cond.notify_all()
        self._changed([s[0] for s in snaps])

    def _writeback(self, pages: Iterable[int]) -> None:
        """All three steps, holding the lock throughout (a writer or a fence)."""
        snaps = self._snapshot(pages)
        if snaps:
            self._install(snaps, self._store(snaps))

    def _fence(self, pages: Sequence[int] | None, *, upload: bool = True) -> None:
        """Write back `pages` (None: every dirty page), fsync the table, and upload
        if this volume's fences wait for the bucket. Called with the lock held."""
        todo = list(dict.fromkeys(self.cache.dirty_pages() if pages is None else pages))
        batch = max(1, self.config.writeback_batch // self._ps)
        try:
            for i in range(0, len(todo), batch):
                self._writeback(todo[i : i + batch])
            self.table.sync()
            if pages is None:
                self._journal.rotate()
                self._ckpt = None
            if upload and self._m.fence_waits_for_upload:
                if self._on_upload is not None:
                    self._on_upload(self)
                else:
                    self.pool.flush()
        except Exception as e:
            raise volume_error(e) from e

    def _changed(self, pages: Sequence[int] | None) -> None:
        """Tell the store (replication) that table entries or the manifest changed."""
        if self._on_change is not None:
            self._on_change(self, pages)

    def _run(self) -> None:
        """Background write-back: when dirty pages pass the high mark, or grow old."""
        cfg = self.config
        batch = max(1, cfg.writeback_batch // self._ps)
        while not self._stop.is_set():
            self._wake.wait(cfg.writeback_interval)
            self._wake.clear()
            if self._ckpt is None and self._journal.end > cfg.journal_bytes:
                with contextlib.suppress(OSError):
                    self._journal.sync()  # the bulk of the retire's fdatasync, off the lock
                with self._lock:
                    if self._closed:
                        return
                    if self._ckpt is None and self._journal.end > cfg.journal_bytes:
                        try:
                            self._checkpoint_begin()
                        except OSError as e:
                            log.warning("volume %s: journal checkpoint: %s", self._m.name, e)
            while not self._stop.is_set():
                with self._lock:
                    if self._closed:
                        return
                    if self._ckpt is not None and not self._ckpt:
                        try:
                            self._checkpoint_end()
                        except OSError as e:
                            log.warning("volume %s: journal checkpoint: %s", self._m.name, e)
                    if self._ckpt:
                        victims = [p for p in self._ckpt if p not in self._inflight][:batch]
                    elif self.cache.dirty_bytes > self.cache.budget * cfg.writeback_high:
                        victims = self.cache.oldest_dirty(batch, self._inflight)
                    else:
                        expired = time.monotonic() - cfg.dirty_expire
                        victims = self.cache.oldest_dirty(batch, self._inflight, expired)
                    snaps = self._snapshot(victims)
                    if not snaps and self._ckpt:
                        # Pages of the checkpoint that are clean now (written back by a
                        # writer) or in flight: the install that cleans them covers them.
                        for p in [p for p in self._ckpt if p not in self._inflight]:
                            pg = self.cache.peek(p)
                            if pg is None or not pg.dirty:
                                self._checkpoint_covered(p, None)
                if not snaps:
                    if self._ckpt:
                        self._stop.wait(0.01)  # in flight elsewhere: let it land
                        continue
                    break
                try:
                    ids = self._store(snaps)
                except VolumeError as e:
                    # The pages stay dirty: the next fence retries and reports it.
                    log.warning("volume %s: background write-back failed: %s", self._m.name, e)
                    self._stop.wait(cfg.writeback_interval)
                    break
                # The write-ahead sync, done here off the lock so that _install's is
                # usually free; a failure here is retried (and reported) by _install.
                with contextlib.suppress(OSError):
                    self._journal.sync()
                with self._lock:
                    try:
                        self._install(snaps, ids)
                    except VolumeError as e:
                        log.warning("volume %s: page-table write failed: %s", self._m.name, e)
                        break

    def _stop_background(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # ---- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Fence, then release the files. Idempotent."""
        self._stop_background()
        with self._lock:
            if self._closed:
                return
            try:
                self._fence(None)
            finally:
                self._closed = True
                self.cache.clear()
                self.table.close()
                self._journal.close()

    def abandon(self) -> None:
        """Release without writing anything back: what kill -9 would leave on disk.

        For crash tests, and for a daemon that must not block on a dead backend.
        """
        self._stop_background()
        with self._lock:
            self._closed = True
            self.cache.clear()
            self.table.close()
            self._journal.close()

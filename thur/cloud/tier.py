"""The tiered pool: the local warm cache in front of one backend.

This is what the tape and volume models use: `put(chunk)` and `get(id)`.

Upload path (`flush()`, or the background uploader started with `start()`):
pinned chunks are read back from the cache, verified, grouped into packs of
about `pack_target` bytes and uploaded by a pool of worker threads. Index
files are batched: once `index_batch_packs` packs are durable in the bucket
(or at `flush()`, or when the cache is short of room), one index file naming
them is PUT, then the entries go into the local index, then the chunks are
marked durable in the cache (only now evictable). Until then the chunks of an
uploaded pack stay pinned, so a crash loses nothing: the packs are found
again by `sync_index()` or simply uploaded again. Chunks the index already
knows (uploaded by another machine, or by us before a crash) are marked
durable without being uploaded again.

Download path (`get()` of a chunk not in the cache): one ranged GET of the
payload from its pack, decoded and checked against the id before it enters
the cache. Concurrent readers of one missing chunk share a single GET. A pack
that has vanished (GC, here or on another machine) makes the reader try the
chunk's other locations, then re-learn the bucket once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

from thur.pool import (
    BackpressureTimeout,
    ChunkCorrupt,
    ChunkMissing,
    Clock,
    Encoded,
    LocalStore,
    PutResult,
    SystemClock,
    chunk_id,
)

from .backend import Backend
from .errors import AlreadyExists, NotFound
from .index import PackIndex, SyncReport, encode_index_file, sync_from_bucket
from .pack import PackBuilder, PackEntry, pack_key
from .retry import RetryPolicy

T = TypeVar("T")
log = logging.getLogger(__name__)
MiB = 1 << 20


def default_workers() -> int:
    return min(16, 4 * (os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class TierConfig:
    pack_target: int = 16 * MiB
    # One index file per this many packs: 64 pack PUTs + 8 index PUTs per GiB.
    index_batch_packs: int = 8
    workers: int = field(default_factory=default_workers)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Never make a corrupt cache file durable: seal check, or decode + BLAKE3
    # for files the pool did not seal itself (LocalStore.read_checked).
    verify_before_upload: bool = True
    idle_flush: float = 5.0  # background uploader: ship a partial pack after this
    # Packs being built or PUT at once. Each holds up to ~2 x pack_target of
    # memory, so this (not `workers`, which downloads share) bounds the
    # uploader's RSS; 4 matches rclone's default --transfers.
    packs_in_flight: int = 4


@dataclass(slots=True)
class UploadReport:
    packs: int = 0
    index_files: int = 0
    chunks: int = 0
    bytes: int = 0
    already_indexed: int = 0
    corrupt: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class TierCounters:
    """Backend traffic since start, for metrics; updated under the tier's lock."""

    # (kind, outcome) -> count; kind "pack" or "index", outcome "ok" or "error".
    uploads: dict[tuple[str, str], int] = field(default_factory=dict)
    upload_bytes: int = 0
    downloads: dict[str, int] = field(default_factory=dict)  # outcome -> ranged GETs
    download_bytes: int = 0
    retries: int = 0  # transient failures retried (RetryPolicy)

    def copy(self) -> TierCounters:
        return TierCounters(
            dict(self.uploads), self.upload_bytes, dict(self.downloads),
            self.download_bytes, self.retries,
        )


class TieredPool:
    """Cache + backend + pack index, with upload and download workers."""

    def __init__(
        self,
        store: LocalStore,
        backend: Backend,
        index: PackIndex,
        config: TierConfig | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.index = index
        self.config = config or TierConfig()
        self.clock = clock or SystemClock()
        self._executor = ThreadPoolExecutor(self.config.workers, thread_name_prefix="thur-io")
        self._lock = threading.Lock()
        self._fetching: dict[bytes, Future[bytes]] = {}
        self._uploading: dict[bytes, int] = {}  # chunk id -> stored bytes, until indexed
        self._unindexed: list[list[PackEntry]] = []  # uploaded packs awaiting an index file
        self._corrupt: set[bytes] = set()  # pinned chunks that failed verification
        self._flush_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counters = TierCounters()
        store.add_listener(self._wake.set)

    # ---- reads and writes -------------------------------------------------

    def put(self, data: bytes | bytearray | memoryview) -> PutResult:
        """Store one chunk; returns once it is durable locally (pinned until uploaded).

        A chunk the backend already has is not stored again. Concurrent
        callers share group commits; for a stream, `submit()` is faster.
        """
        return self.store.put(data, skip_if=self._indexed)

    def submit(self, data: bytes | bytearray | memoryview) -> Future[PutResult]:
        """`put()` on the pool's workers: hash, compress and write overlap the caller.

        The future resolves once the chunk is durable locally (acknowledge
        it then, not before). Blocks while `PoolConfig.submit_window` bytes
        are in flight. The tape stream's way in: keep the futures in stream
        order and map each chunk when its future is done.
        """
        return self.store.submit(data, skip_if=self._indexed)

    def put_many(self, chunks: Iterable[bytes | bytearray | memoryview]) -> list[PutResult]:
        """Store a batch in parallel; results in input order, all durable."""
        return self.store.put_many(chunks, skip_if=self._indexed)

    def _indexed(self, cid: bytes) -> bool:
        # Asked after the guard note and the cache lookup (see LocalStore.put):
        # the order thur/pool/gc.py relies on.
        return cid in self.index

    def retain(self, ids: Iterable[bytes]) -> None:
        """Declare references made without `put()` (copying a cartridge).

        Call it *before* the new owner's references become visible and the
        old owner's may go: a GC run in progress then keeps these chunks.
        """
        self.store.guard.note(ids)

    def get(self, cid: bytes) -> bytes:
        """Verified plaintext of a chunk, from the cache or the backend."""
        try:
            return self.store.get(cid)
        except ChunkMissing:
            pass
        except ChunkCorrupt:
            if cid not in self.index:
                raise  # only copy is bad: report it, never guess
            log.error(
                "cached chunk %s is corrupt; re-fetching from %s", cid.hex(), self.backend.name
            )
            self.store.discard(cid)
        return self._single_flight(cid)

    def prefetch(self, ids: Iterable[bytes]) -> None:
        """Read-ahead: fetch missing chunks in the background."""
        for cid in ids:
            if not self.store.contains(cid):
                self._executor.submit(self._prefetch_one, cid)

    def _prefetch_one(self, cid: bytes) -> None:
        if self.store.contains(cid):  # an earlier read-ahead or reader got it meanwhile
            return
        try:
            self._single_flight(cid)
        except Exception as e:  # a later get() reports it to the reader
            log.debug("prefetch of %s failed: %s", cid.hex(), e)

    def _single_flight(self, cid: bytes) -> bytes:
        with self._lock:
            fut = self._fetching.get(cid)
            leader = fut is None
            if fut is None:
                fut = self._fetching[cid] = Future()
        if not leader:
            return fut.result()
        try:
            # A leader that finished just before we registered has already cached it.
            cached = self._cached(cid)
            data = cached if cached is not None else self._fetch(cid)
        except BaseException as e:
            fut.set_exception(e)
            raise
        else:
            fut.set_result(data)
            return data
        finally:
            with self._lock:
                del self._fetching[cid]

    def _cached(self, cid: bytes) -> bytes | None:
        try:
            return self.store.get(cid)
        except (ChunkMissing, ChunkCorrupt):
            return None

    def _fetch(self, cid: bytes) -> bytes:
        for attempt in range(2):
            for entry in self.index.locations(cid):
                try:
                    return self._fetch_from(cid, entry)
                except NotFound:
                    log.info("%s: pack %s is gone", cid.hex(), entry.pack_id.hex())
            if attempt == 0 and self.index.locations(cid):
                self.sync_index()  # forgets vanished packs, learns their replacements
        raise ChunkMissing(cid)

    def _fetch_from(self, cid: bytes, entry: PackEntry) -> bytes:
        key = pack_key(entry.pack_id)
        try:
            payload = self._call(lambda: self.backend.get(key, entry.offset, entry.length), key)
        except NotFound:
            self._count_download("not_found", 0)  # a pack GC removed: tried elsewhere
            raise
        except BaseException:
            self._count_download("error", 0)
            raise
        self._count_download("ok", len(payload))
        if len(payload) != entry.length:
            raise ChunkCorrupt(cid, f"{key} returned {len(payload)} of {entry.length} bytes")
        plain = self.store.compressor.decompress(cid, entry.codec, payload, entry.plain_len)
        if chunk_id(plain) != cid:
            raise ChunkCorrupt(cid, f"bytes from {key} do not hash to the id")
        # Cache it as durable only if the pack is still indexed, atomically
        # with respect to a GC commit: a dead chunk must never re-enter the
        # cache as "durable" just as its last bucket copy goes away.
        with self.store.guard.locked():
            if entry in self.index.locations(cid):
                # A cache full of pinned data must not stall a reader: serve it uncached.
                with contextlib.suppress(BackpressureTimeout):
                    self.store.put_encoded(
                        cid,
                        Encoded(entry.codec, entry.plain_len, payload),
                        durable=True,
                        max_wait=0.0,
                    )
        return plain

    # ---- uploads ----------------------------------------------------------

    def flush(self) -> UploadReport:
        """Upload and index every pinned chunk now; returns when all are durable (or failed)."""
        return self._flush(seal=True)

    @contextlib.contextmanager
    def uploads_paused(self) -> Iterator[None]:
        """No pack is uploaded or indexed inside this block (GC snapshots here)."""
        with self._flush_lock:
            yield

    def _flush(self, *, seal: bool) -> UploadReport:
        with self._flush_lock:
            report = UploadReport()
            groups = self._plan(report, seal=seal)
            futures = self._upload_all(groups, report)
            errors = [f.exception() for f in futures if f.exception() is not None]
            # Index whatever reached the bucket even if some packs failed.
            self._write_index(report, seal=seal)
            if errors:
                raise errors[0]  # type: ignore[misc]
            return report

    def _upload_all(
        self, groups: list[list[tuple[bytes, int]]], report: UploadReport
    ) -> list[Future[None]]:
        """Upload the groups, at most `packs_in_flight` at a time; wait for all."""
        todo = list(reversed(groups))
        running: set[Future[None]] = set()
        finished: list[Future[None]] = []
        while todo or running:
            while todo and len(running) < max(1, self.config.packs_in_flight):
                running.add(self._executor.submit(self._upload_pack, todo.pop(), report))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            finished.extend(done)
        return finished

    def _held_bytes(self) -> int:
        with self._lock:
            return sum(self._uploading.values())

    def _plan(self, report: UploadReport, *, seal: bool) -> list[list[tuple[bytes, int]]]:
        groups: list[list[tuple[bytes, int]]] = []
        current: list[tuple[bytes, int]] = []
        size = 0
        todo = [
            (cid, stored)
            for cid, stored in self.store.pending()
            if cid not in self._corrupt and cid not in self._uploading
        ]
        # Uploaded, but a crash came before they were marked durable.
        indexed = self.index.known([cid for cid, _stored in todo])
        known: list[bytes] = []
        for cid, stored in todo:
            if cid in indexed:
                known.append(cid)
                continue
            if current and size + stored > self.config.pack_target:
                groups.append(current)
                current, size = [], 0
            current.append((cid, stored))
            size += stored
        # Unless sealing, a partial pack waits for more chunks: shipping it
        # would double the PUTs of a steady stream.
        ship_at = min(self.config.pack_target // 2, self.store.budget // 4)
        if current and (seal or size >= ship_at):
            groups.append(current)
        if known:
            self.store.mark_durable(known)
            report.already_indexed += len(known)
        with self._lock:
            for g in groups:
                self._uploading.update(g)
        return groups

    def _upload_pack(self, group: list[tuple[bytes, int]], report: UploadReport) -> None:
        entries: list[PackEntry] = []
        try:
            builder = PackBuilder()
            # verify: the seal check for files this pool wrote from hashed
            # plaintext, decode + BLAKE3 for any other (chunkfile.py).
            read = self.store.read_many(
                [cid for cid, _stored in group], verify=self.config.verify_before_upload
            )
            for cid, enc in read:
                if isinstance(enc, ChunkMissing):
                    continue  # swept by GC since it was planned: nothing to upload
                if isinstance(enc, ChunkCorrupt):
                    log.error("not uploading %s: %s", cid.hex(), enc)
                    with self._lock:
                        self._corrupt.add(cid)
                        report.corrupt.append(cid)
                    continue
                builder.add(cid, enc)
            if not len(builder):
                return
            pack_id, data, built = builder.finish()
            key = pack_key(pack_id)
            self._counted_put("pack", key, data)
            entries = built
            with self._lock:
                self._unindexed.append(entries)
                report.packs += 1
                report.chunks += len(entries)
                report.bytes += len(data)
        finally:
            # Chunks of an uploaded pack stay held until their index file is
            # written; the others go back to the queue.
            kept = {e.chunk_id for e in entries}
            with self._lock:
                for cid, _stored in group:
                    if cid not in kept:
                        self._uploading.pop(cid, None)

    def _write_index(self, report: UploadReport, *, seal: bool) -> None:
        """Index uploaded packs, `index_batch_packs` per file; then local state.

        Full batches only, unless sealing or the held chunks crowd the cache
        (they cannot be evicted, and writers must not stall on a filling batch).
        """
        per_file = self.config.index_batch_packs
        while True:
            with self._lock:
                n = len(self._unindexed)
            short = self._held_bytes() >= self.store.budget // 4
            if n == 0 or (n < per_file and not seal and not short):
                return
            with self._lock:
                batch = self._unindexed[:per_file]
                del self._unindexed[:per_file]
            entries = [e for pack in batch for e in pack]
            try:
                ix_key, ix_data = encode_index_file(entries)
                self._counted_put("index", ix_key, ix_data)
                self.index.add(entries, ix_key)
                self.store.mark_durable(e.chunk_id for e in entries)
            except BaseException:
                with self._lock:
                    self._unindexed[:0] = batch  # retried by the next flush
                raise
            with self._lock:
                for e in entries:
                    self._uploading.pop(e.chunk_id, None)
                report.index_files += 1

    def put_once(self, key: str, data: bytes) -> None:
        """PUT a content-named object; one already there holds these bytes."""
        with contextlib.suppress(AlreadyExists):
            self.backend.put(key, data, if_absent=True)

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return self.config.retry.call(fn, self._retry_sleep, what)

    def _retry_sleep(self, seconds: float) -> None:
        with self._lock:
            self._counters.retries += 1
        self.clock.sleep(seconds)

    def _counted_put(self, kind: str, key: str, data: bytes) -> None:
        outcome = "error"
        try:
            self._call(lambda: self.put_once(key, data), key)
            outcome = "ok"
        finally:
            with self._lock:
                n = self._counters.uploads.get((kind, outcome), 0)
                self._counters.uploads[(kind, outcome)] = n + 1
                if outcome == "ok":
                    self._counters.upload_bytes += len(data)

    def _count_download(self, outcome: str, size: int) -> None:
        with self._lock:
            self._counters.downloads[outcome] = self._counters.downloads.get(outcome, 0) + 1
            self._counters.download_bytes += size

    def counters(self) -> TierCounters:
        """A snapshot of the backend traffic since start (for /metrics)."""
        with self._lock:
            return self._counters.copy()

    # ---- bucket index, background uploader ---------------------------------

    def sync_index(self) -> SyncReport:
        """Learn the bucket's index (index files, and packs no index file names)."""
        return sync_from_bucket(self.index, self.backend, lambda fn: self._call(fn, "sync"))

    def start(self) -> None:
        """Run the uploader in the background until `close()`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="thur-uploader", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            woke = self._wake.wait(self.config.idle_flush)
            self._wake.clear()
            if self._stop.is_set():
                break
            held = self._held_bytes()  # in uploaded packs, waiting for their index file
            waiting = self.store.stats().pinned_bytes - held
            # A small cache must not wait for a full pack: writers would stall.
            threshold = min(self.config.pack_target, self.store.budget // 4)
            if woke and waiting < threshold:
                continue  # let a pack fill up; the idle timeout ships the rest
            if not woke and waiting <= 0 and held == 0:
                continue
            try:
                self._flush(seal=not woke)  # idle: index everything now
            except Exception as e:
                log.error("background upload failed: %s", e)
                self._stop.wait(self.config.retry.initial)

    def close(self) -> None:
        """Stop the uploader (pinned chunks stay pinned and survive) and the workers."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._executor.shutdown(wait=True)

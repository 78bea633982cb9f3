"""The tiered pool: the local warm cache in front of one backend.

This is what the tape and volume models use: `put(chunk)` and `get(id)`.

Upload path (`flush()`, or the background uploader started with `start()`):
pinned chunks are read back from the cache, verified, grouped into packs of
about `pack_target` bytes and uploaded by a pool of worker threads. For each
pack, in this order: PUT the pack, PUT its index file, add the entries to the
local index, mark the chunks durable in the cache (only now evictable).
Chunks the index already knows (uploaded by another machine, or by us before
a crash) are marked durable without being uploaded again.

Download path (`get()` of a chunk not in the cache): one ranged GET of the
payload from its pack, decoded and checked against the id before it enters
the cache. Concurrent readers of one missing chunk share a single GET.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
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
from .errors import AlreadyExists
from .index import PackIndex, SyncReport, encode_index_file, sync_from_bucket
from .pack import PackBuilder, pack_key
from .retry import RetryPolicy

T = TypeVar("T")
log = logging.getLogger(__name__)
MiB = 1 << 20


def default_workers() -> int:
    return min(16, 4 * (os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class TierConfig:
    pack_target: int = 16 * MiB
    workers: int = field(default_factory=default_workers)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    verify_before_upload: bool = True  # never make a corrupt cache file durable
    idle_flush: float = 5.0  # background uploader: ship a partial pack after this


@dataclass(slots=True)
class UploadReport:
    packs: int = 0
    chunks: int = 0
    bytes: int = 0
    already_indexed: int = 0
    corrupt: list[bytes] = field(default_factory=list)


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
        self._uploading: set[bytes] = set()
        self._corrupt: set[bytes] = set()  # pinned chunks that failed verification
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        store.add_listener(self._wake.set)

    # ---- reads and writes -------------------------------------------------

    def put(self, data: bytes | bytearray | memoryview) -> PutResult:
        """Store one chunk. A chunk the backend already has is not stored again."""
        cid = chunk_id(data)
        if not self.store.contains(cid) and cid in self.index:
            return PutResult(cid, len(data), 0, False)
        return self.store.put(data)

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
            data = self._fetch(cid)
        except BaseException as e:
            fut.set_exception(e)
            raise
        else:
            fut.set_result(data)
            return data
        finally:
            with self._lock:
                del self._fetching[cid]

    def _fetch(self, cid: bytes) -> bytes:
        entry = self.index.lookup(cid)
        if entry is None:
            raise ChunkMissing(cid)
        key = pack_key(entry.pack_id)
        payload = self._call(lambda: self.backend.get(key, entry.offset, entry.length), key)
        if len(payload) != entry.length:
            raise ChunkCorrupt(cid, f"{key} returned {len(payload)} of {entry.length} bytes")
        plain = self.store.compressor.decompress(cid, entry.codec, payload, entry.plain_len)
        if chunk_id(plain) != cid:
            raise ChunkCorrupt(cid, f"bytes from {key} do not hash to the id")
        # A cache full of pinned data must not stall a reader: serve it uncached.
        with contextlib.suppress(BackpressureTimeout):
            self.store.put_encoded(
                cid, Encoded(entry.codec, entry.plain_len, payload), durable=True, max_wait=0.0
            )
        return plain

    # ---- uploads ----------------------------------------------------------

    def flush(self) -> UploadReport:
        """Upload every pinned chunk now; returns when all are durable (or failed)."""
        with self._flush_lock:
            report = UploadReport()
            groups = self._plan(report)
            futures = [self._executor.submit(self._upload_pack, g, report) for g in groups]
            wait(futures)
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                raise errors[0]  # type: ignore[misc]
            return report

    def _plan(self, report: UploadReport) -> list[list[bytes]]:
        groups: list[list[bytes]] = []
        current: list[bytes] = []
        size = 0
        known: list[bytes] = []
        for cid, stored in self.store.pending():
            if cid in self._corrupt or cid in self._uploading:
                continue
            if cid in self.index:
                known.append(cid)
                continue
            if current and size + stored > self.config.pack_target:
                groups.append(current)
                current, size = [], 0
            current.append(cid)
            size += stored
        if current:
            groups.append(current)
        if known:
            self.store.mark_durable(known)
            report.already_indexed += len(known)
        with self._lock:
            for g in groups:
                self._uploading.update(g)
        return groups

    def _upload_pack(self, group: list[bytes], report: UploadReport) -> None:
        try:
            builder = PackBuilder()
            for cid in group:
                try:
                    enc = self.store.read_encoded(cid)
                    if self.config.verify_before_upload:
                        plain = self.store.compressor.decompress(
                            cid, enc.codec, enc.payload, enc.plain_len
                        )
                        if chunk_id(plain) != cid:
                            raise ChunkCorrupt(cid, "BLAKE3 mismatch before upload")
                except (ChunkCorrupt, ChunkMissing) as e:
                    log.error("not uploading %s: %s", cid.hex(), e)
                    with self._lock:
                        self._corrupt.add(cid)
                        report.corrupt.append(cid)
                    continue
                builder.add(cid, enc)
            if not len(builder):
                return
            pack_id, data, entries = builder.finish()
            key = pack_key(pack_id)
            self._call(lambda: self._put_once(key, data), key)
            ix_key, ix_data = encode_index_file(entries)
            self._call(lambda: self._put_once(ix_key, ix_data), ix_key)
            self.index.add(entries, ix_key)
            self.store.mark_durable(e.chunk_id for e in entries)
            with self._lock:
                report.packs += 1
                report.chunks += len(entries)
                report.bytes += len(data)
        finally:
            with self._lock:
                self._uploading.difference_update(group)

    def _put_once(self, key: str, data: bytes) -> None:
        # Keys are content hashes: if it is already there, it is this content.
        with contextlib.suppress(AlreadyExists):
            self.backend.put(key, data, if_absent=True)

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return self.config.retry.call(fn, self.clock.sleep, what)

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
            pinned = self.store.stats().pinned_bytes
            # A small cache must not wait for a full pack: writers would stall.
            threshold = min(self.config.pack_target, self.store.budget // 4)
            if pinned == 0 or (woke and pinned < threshold):
                continue  # let a pack fill up; the idle timeout ships the rest
            try:
                self.flush()
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

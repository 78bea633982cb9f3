"""`VolumeStore`: the volumes of a VSA, by name, under one data dir.

    <root>/<name>/            one directory per volume (volume.py)
    <root>/.create-<name>/    a volume being created (removed on start)
    <root>/.restore-<name>/   one being restored from the bucket (removed on start)
    <root>/.trash-<name>-*/   one being deleted (removed on start)

When the pool is a `TieredPool`, a background replicator publishes each
volume's manifest and changed page-table segments to the bucket
`replicate_delay` seconds after its first unpublished change (replica.py).
A volume whose `fence_waits_for_upload` is set publishes at every fence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from thur.cloud import TieredPool
from thur.replicated_store import ReplicatedStore
from thur.volume.core import MANIFEST, TABLE, VolumeConfig, VolumeCore, VolumePool
from thur.volume.manifest import (
    DEFAULT_PAGE_SIZE,
    VolumeManifest,
    check_geometry,
    check_name,
    load_manifest,
)
from thur.volume.replica import SEGMENT_ENTRIES, VolumeReplicator, load_replica
from thur.volume.table import PageTable
from thur.volume.volume import PoolVolume

log = logging.getLogger(__name__)
MAX_LUN = 16383  # SAM flat addressing; LIO accepts up to 65535


class VolumeStoreError(Exception):
    """Base of the store's own errors (the volumes raise `VolumeError`s)."""


class VolumeExists(VolumeStoreError):
    """`create()` of a name that already exists (locally or in the bucket)."""


class UnknownVolume(VolumeStoreError, KeyError):
    """No volume with this name, locally or in the bucket."""


class LunInUse(VolumeStoreError):
    """`create(lun=N)` with a LUN another volume already has."""


class VolumeStore(ReplicatedStore[PoolVolume, "tuple[float, set[int] | None]"]):
    """Creates, opens, lists, resizes and deletes volumes; replicates them.

    Thread-safe. One open `PoolVolume` per name: `open()` returns the same
    object until `close(name)`.
    """

    kind = "volume"
    thread_name = "thur-vol-replica"
    manifest_file = MANIFEST
    unknown = UnknownVolume
    log = log

    def __init__(
        self,
        root: Path,
        pool: VolumePool,
        *,
        config: VolumeConfig | None = None,
        replicate_delay: float = 5.0,
    ) -> None:
        replicator = VolumeReplicator(pool) if isinstance(pool, TieredPool) else None
        super().__init__(root, pool, replicator, replicate_delay)
        self.replicator: VolumeReplicator | None
        self.pool: VolumePool
        self.config = config or VolumeConfig()
        # `_dirty`: name -> (time of its first unpublished change, segments that may
        # differ from the bucket, None meaning "any": after a start nobody knows).

    # ---- volumes --------------------------------------------------------------------

    def create(
        self,
        name: str,
        size: int,
        *,
        block_size: int = 4096,
        page_size: int = DEFAULT_PAGE_SIZE,
        lun: int | None = None,
        fence_waits_for_upload: bool = False,
    ) -> PoolVolume:
        """A new, empty volume of `size` bytes (a multiple of `block_size`)."""
        check_name(name)
        if size % block_size:
            raise ValueError(f"size {size} is not a multiple of the block size {block_size}")
        check_geometry(block_size, page_size, size // block_size)
        with self._lock:
            if self.exists(name):
                raise VolumeExists(f"volume {name} already exists")
            used = self._luns()
            if lun is None:
                lun = next(n for n in range(MAX_LUN + 1) if n not in used)
            elif not 0 <= lun <= MAX_LUN:
                raise ValueError(f"LUN {lun}: use 0 to {MAX_LUN}")
            elif lun in used:
                raise LunInUse(f"LUN {lun} belongs to volume {used[lun]}")
            manifest = VolumeManifest(
                name=name,
                num_blocks=size // block_size,
                block_size=block_size,
                page_size=page_size,
                lun=lun,
                fence_waits_for_upload=fence_waits_for_upload,
            )

            def fill(tmp: Path) -> None:
                PageTable(tmp / TABLE, page_size).close()
                manifest.save(tmp / MANIFEST)

            self._create_dir(name, fill)
            self._mark_dirty(name, set())
            return self.open(name)

    def _luns(self) -> dict[int, str]:
        out = {}
        for name in self.list():
            lun = load_manifest(self.root / name / MANIFEST).lun
            if lun is not None:
                out[lun] = name
        return out

    def open(self, name: str) -> PoolVolume:
        """The open volume (restored from the bucket first if only the bucket has it)."""
        check_name(name)
        with self._lock:
            vol = self._open.get(name)
            if vol is not None:
                return vol
            vol = PoolVolume(
                self._local_path(name),
                self.pool,
                self.config,
                on_change=self._changed,
                on_upload=self._publish_now,
            )
            self._open[name] = vol
            return vol

    def close(self, name: str) -> None:
        """Fence and release (the export went away)."""
        with self._lock:
            vol = self._open.pop(name, None)
        if vol is not None:
            vol.close()

    def resize(self, name: str, size: int) -> None:
        """Grow, or shrink when nothing allocated lies past the new end (ShrinkRefused)."""
        vol = self.open(name)
        if size % vol.block_size:
            raise ValueError(f"size {size} is not a multiple of the block size {vol.block_size}")
        vol.resize(size // vol.block_size)

    def delete(self, name: str) -> None:
        """Remove a volume here and in the bucket (its chunks become garbage for GC).

        The caller (the daemon) refuses while the volume is exported and in use.
        """
        with self._lock:
            if not self.exists(name):
                raise UnknownVolume(name)
            vol = self._open.pop(name, None)
            if vol is not None:
                vol.abandon()  # its data is going: nothing to write back
            with self._dirty_lock:
                self._dirty.pop(name, None)
            if self.replicator is not None:
                self.replicator.delete(name)
            self._remove_local(name)

    def info(self, name: str) -> dict[str, Any]:
        """Status of one volume (`thurvsa volume info`)."""
        vol = self.open(name)
        out = vol.manifest_json()
        out["size"] = vol.num_blocks * vol.block_size
        out["mapped_bytes"] = vol.mapped_bytes()
        with self._dirty_lock:
            dirty = name in self._dirty
        out["replication_pending"] = self.replicator is not None and (
            dirty or load_replica(vol.path)["generation"] != vol.generation
        )
        return out

    # ---- GC owners -------------------------------------------------------------------

    def owners(self) -> list[_Owner]:
        """One `thur.pool.ChunkOwner` per volume, for `GarbageCollector(owners=…)`."""
        return [_Owner(self, n) for n in self.list()]

    # ---- replication -------------------------------------------------------------------

    def _changed(self, vol: VolumeCore, pages: Sequence[int] | None) -> None:
        segs = set() if pages is None else {p // SEGMENT_ENTRIES for p in pages}
        self._mark_dirty(vol._m.name, segs)

    def _mark_dirty(self, name: str, segs: set[int] | None) -> None:
        if self.replicator is None:
            return
        with self._dirty_lock:
            since, old = self._dirty.get(name, (time.monotonic(), set()))
            merged = None if old is None or segs is None else old | segs
            self._dirty[name] = (since, merged)
        self._wake.set()

    def _dirty_since(self, value: tuple[float, set[int] | None]) -> float:
        return value[0]

    def _queue_at_start(self, name: str) -> None:
        self._mark_dirty(name, None)  # what changed before a crash is not known

    def _take_dirty(self, name: str) -> set[int] | None:
        with self._dirty_lock:
            return self._dirty.pop(name, (0.0, set()))[1]

    def _publish(self, vol: PoolVolume) -> bool:
        assert self.replicator is not None
        segs = self._take_dirty(vol.name)
        try:
            return self.replicator.replicate(vol, segs)
        except BaseException:
            self._mark_dirty(vol.name, segs)
            raise

    def _publish_now(self, vol: VolumeCore) -> None:
        """A fence of a volume whose fences wait for the bucket."""
        assert isinstance(vol, PoolVolume)
        if self.replicator is None:
            vol.pool.flush()
        else:
            self._publish(vol)

    def replicate(self, name: str | None = None) -> int:
        """Publish now (one volume or every one with unpublished changes); returns how
        many were published. Raises the first failure."""
        if self.replicator is None:
            return 0
        with self._dirty_lock:
            todo = [name] if name is not None else list(self._dirty)
        done = 0
        for n in todo:
            with self._lock:
                vol = self._open.get(n)
            if vol is None:
                if not (self.root / n / MANIFEST).exists():
                    self._take_dirty(n)
                    continue
                vol = self.open(n)
            done += self._publish(vol)
        return done

    def shutdown(self, *, replicate: bool = True) -> None:
        """Close every volume (a fence each), publish, stop the threads."""
        self._stop_thread()
        with self._lock:
            vols = list(self._open.values())
        for vol in vols:
            try:
                if replicate and self.replicator is not None:
                    vol.flush()
                    self._publish(vol)
            except Exception as e:
                log.error("final replication of %s failed (retried at next start): %s", vol.name, e)
        with self._lock:
            self._open.clear()
        for vol in vols:
            vol.close()


class _Owner:
    """A volume as a GC owner; reads its files even when it is not open."""

    def __init__(self, store: VolumeStore, name: str) -> None:
        self.store = store
        self.volume = name

    @property
    def name(self) -> str:
        return f"volume:{self.volume}"

    def chunk_ids(self) -> Iterator[bytes]:
        # Its own descriptor, open volume or not: it reads the same page cache, and
        # the fsync at the end (see PoolVolume.chunk_ids) covers the whole file.
        path = self.store.root / self.volume
        m = load_manifest(path / MANIFEST)
        table = PageTable(path / TABLE, m.page_size)
        try:
            yield from (cid for _p, cid in table.mapped())
            table.sync()
        finally:
            table.close()
        if self.store.replicator is not None:
            yield from self.store.replicator.stale_ids(path, m.page_size)

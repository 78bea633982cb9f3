"""Volume metadata in the bucket: incremental replication and restore.

Bucket layout (keys relative to the backend's root)::

    volumes/<name>/manifest.json              the manifest + the segment map
    volumes/<name>/table/<seg>-<hash>         page-table segment

A segment is entries [seg x E, (seg + 1) x E) of the local page table, byte for
byte, without its trailing unmapped entries (E = `SEGMENT_ENTRIES`);
`<seg>` is 8 decimal digits, `<hash>` the 64-hex BLAKE3-256 of its bytes,
which readers verify. A segment of only unmapped entries is not stored. The
manifest's `segments` maps the decimal segment number to its key.

Write order of one replication (the bucket is the source of truth):

1. every chunk named by a segment about to be PUT is durable in the bucket
   (its pack and pack-index file; `TieredPool.flush()` if not);
2. the changed segments are PUT (content-named, so unchanged ones keep keys);
3. the manifest is PUT, last: only now does the bucket show the new state;
4. `replica.json` (what was just published) is written locally;
5. objects under `volumes/<name>/` the manifest does not name are deleted.

A crash before 3 leaves the previous manifest and all its segments; after 3,
step 5 of the next run sweeps leftovers. The published table is a mix of
page states the local table has held; each names chunks made durable first.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from blake3 import blake3

from thur.cloud import AlreadyExists, NotFound, TieredPool
from thur.fsutil import atomic_write_json, fsync_dir
from thur.volume.core import MANIFEST, TABLE
from thur.volume.manifest import VolumeManifest
from thur.volume.protocol import BackendFailure, MediumCorrupt
from thur.volume.table import ENTRY_SIZE, PageTable, ids_in
from thur.volume.volume import PoolVolume

T = TypeVar("T")
PREFIX = "volumes/"
REPLICA = "replica.json"
# 1 MiB of entries per segment: with 64 KiB pages one segment covers 1 GiB of
# volume, so a 1 TiB volume has at most 1024 segments and a replication after
# scattered writes re-uploads only the segments they touched.
SEGMENT_ENTRIES = 16384


def manifest_key(name: str) -> str:
    return f"{PREFIX}{name}/manifest.json"


def segment_key(name: str, seg: int, data: bytes) -> str:
    return f"{PREFIX}{name}/table/{seg:08d}-{blake3(data).hexdigest()}"


def load_replica(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / REPLICA).read_bytes())
    except FileNotFoundError:
        return {"generation": -1, "segments": {}}


def page_count(m: dict[str, Any]) -> int:
    return -(-m["num_blocks"] * m["block_size"] // m["page_size"])


class VolumeReplicator:
    """Publishes volumes' manifests and page tables to the tier's backend."""

    def __init__(self, tier: TieredPool) -> None:
        self.tier = tier
        self.backend = tier.backend
        self._lock = threading.Lock()  # one replication at a time (background + fences)

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return self.tier.config.retry.call(fn, self.tier.clock.sleep, what)

    def replicate(self, vol: PoolVolume, segments: Iterable[int] | None) -> bool:
        """Publish the volume; `segments` are those that may have changed since the
        last run (None: any). False when the bucket was already current."""
        with self._lock:
            replica = load_replica(vol.path)
            manifest = vol.manifest_json()  # before the table: a shrink never leaves
            nseg = -(-page_count(manifest) // SEGMENT_ENTRIES)  # entries past the end
            published: dict[str, str] = replica["segments"]
            if segments is None:
                todo = set(vol.table.data_segments(SEGMENT_ENTRIES))
                todo.update(int(s) for s in published)
            else:
                todo = set(segments)
            new = {s: k for s, k in published.items() if int(s) not in todo and int(s) < nseg}
            for seg in sorted(s for s in todo if s < nseg):
                data = _trim(vol.table.read_entries(seg * SEGMENT_ENTRIES, SEGMENT_ENTRIES))
                if not data:
                    continue  # all unmapped: not stored
                key = segment_key(vol.name, seg, data)
                if published.get(str(seg)) != key:
                    self._ensure_durable(cid for _p, cid in ids_in(data, vol.page_size))
                    self._put_once(key, data)
                new[str(seg)] = key
            if new == published and replica["generation"] == manifest["generation"]:
                return False
            doc = dict(manifest, segments=new, segment_entries=SEGMENT_ENTRIES)
            body = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
            key = manifest_key(vol.name)
            self._call(lambda: self.backend.put(key, body), key)
            atomic_write_json(
                vol.path / REPLICA, {"generation": manifest["generation"], "segments": new}
            )
            self._sweep(vol.name, set(new.values()))
            return True

    def _ensure_durable(self, ids: Iterable[bytes]) -> None:
        index = self.tier.index
        missing = [c for c in dict.fromkeys(ids) if c not in index]
        if missing:
            self.tier.flush()
            still = [c for c in missing if c not in index]
            if still:
                raise BackendFailure(f"{len(still)} chunks are not in the bucket yet")

    def _put_once(self, key: str, data: bytes) -> None:
        def put() -> None:
            with contextlib.suppress(AlreadyExists):
                self.backend.put(key, data, if_absent=True)

        self._call(put, key)

    def _sweep(self, name: str, keep: set[str]) -> None:
        keep = keep | {manifest_key(name)}
        stale = [o.key for o in self.backend.list(f"{PREFIX}{name}/") if o.key not in keep]
        for key in stale:
            self._call(lambda k=key: self.backend.delete(k), key)

    # ---- the bucket as the source of truth ------------------------------------------

    def names(self) -> Iterator[str]:
        """Volumes with a manifest in the bucket."""
        for o in self.backend.list(PREFIX):
            parts = o.key.split("/")
            if len(parts) == 3 and parts[2] == "manifest.json":
                yield parts[1]

    def exists(self, name: str) -> bool:
        try:
            self._call(lambda: self.backend.head(manifest_key(name)), name)
        except NotFound:
            return False
        return True

    def restore(self, name: str, dest: Path) -> None:
        """Rebuild a volume directory at `dest` from the bucket (dest must not exist)."""
        key = manifest_key(name)
        doc = json.loads(self._call(lambda: self.backend.get(key), key))
        manifest = VolumeManifest.from_json(doc)  # validates format and version
        tmp = dest.with_name(f".restore-{dest.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        table = PageTable(tmp / TABLE, manifest.page_size)
        try:
            for seg, skey in doc["segments"].items():
                data = self._get_segment(skey)
                for _ in ids_in(data, manifest.page_size):  # every entry must decode
                    pass
                table.write_entries(int(seg) * SEGMENT_ENTRIES, data)
            table.sync()
        finally:
            table.close()
        atomic_write_json(
            tmp / REPLICA, {"generation": manifest.generation, "segments": doc["segments"]}
        )
        manifest.save(tmp / MANIFEST)
        os.rename(tmp, dest)
        fsync_dir(dest.parent)

    def _get_segment(self, skey: str) -> bytes:
        data = self._call(lambda: self.backend.get(skey), skey)
        if blake3(data).hexdigest() != skey.rsplit("-", 1)[1] or len(data) % ENTRY_SIZE:
            raise MediumCorrupt(f"{skey}: bytes do not match the key")
        return data

    def delete(self, name: str) -> None:
        """Manifest first, so a half-deleted volume is never restorable."""
        key = manifest_key(name)
        self._call(lambda: self.backend.delete(key), key)
        self._sweep(name, set())

    def stale_ids(self, path: Path, page_size: int) -> Iterator[bytes]:
        """Chunk ids the bucket's copy names in segments that have changed locally
        since (GC keeps them until the next replication replaces those segments)."""
        segments = load_replica(path)["segments"]
        if not segments:
            return
        table = PageTable(path / TABLE, page_size, fsync=False)
        try:
            for seg, skey in segments.items():
                first = int(seg) * SEGMENT_ENTRIES
                local = _trim(table.read_entries(first, SEGMENT_ENTRIES))
                if blake3(local).hexdigest() == skey.rsplit("-", 1)[1]:
                    continue
                try:
                    data = self._get_segment(skey)
                except NotFound:
                    continue
                yield from (cid for _p, cid in ids_in(data, page_size))
        finally:
            table.close()


def _trim(data: bytes) -> bytes:
    """Drop trailing unmapped entries (whole entries: a CRC may end in zero bytes)."""
    used = len(data.rstrip(b"\0"))
    return data[: -(-used // ENTRY_SIZE) * ENTRY_SIZE]

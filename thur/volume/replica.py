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

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from thur.cloud import NotFound
from thur.replica import SegmentReplicator, key_matches
from thur.replica import load_replica as _load_replica
from thur.volume.core import MANIFEST, TABLE
from thur.volume.manifest import VolumeManifest
from thur.volume.protocol import BackendFailure, MediumCorrupt
from thur.volume.table import ENTRY_SIZE, PageTable, ids_in
from thur.volume.volume import PoolVolume

PREFIX = "volumes/"
# 1 MiB of entries per segment: with 64 KiB pages one segment covers 1 GiB of
# volume, so a 1 TiB volume has at most 1024 segments and a replication after
# scattered writes re-uploads only the segments they touched.
SEGMENT_ENTRIES = 16384


def load_replica(path: Path) -> dict[str, Any]:
    return _load_replica(path, {})


def page_count(m: dict[str, Any]) -> int:
    return -(-m["num_blocks"] * m["block_size"] // m["page_size"])


class VolumeReplicator(SegmentReplicator):
    """Publishes volumes' manifests and page tables to the tier's backend."""

    prefix = PREFIX
    backend_failure = BackendFailure
    corrupt = MediumCorrupt

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
                key = self.segment_key(vol.name, "table", seg, data)
                if published.get(str(seg)) != key:
                    self._ensure_durable(cid for _p, cid in ids_in(data, vol.page_size))
                    self._put_once(key, data)
                new[str(seg)] = key
            if new == published and replica["generation"] == manifest["generation"]:
                return False
            self._publish_manifest(
                vol.name,
                vol.path,
                manifest,
                manifest["generation"],
                new,
                SEGMENT_ENTRIES,
                set(new.values()),
            )
            return True

    # ---- the bucket as the source of truth ------------------------------------------

    def restore(self, name: str, dest: Path) -> None:
        """Rebuild a volume directory at `dest` from the bucket (dest must not exist)."""
        doc = self._get_manifest(name)
        manifest = VolumeManifest.from_json(doc)  # validates format and version

        def fill(tmp: Path) -> None:
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

        self._restore_dir(dest, doc, manifest, MANIFEST, fill)

    def _get_segment(self, key: str) -> bytes:
        data = super()._get_segment(key)
        if len(data) % ENTRY_SIZE:
            raise MediumCorrupt(f"{key}: bytes do not match the key")
        return data

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
                if key_matches(skey, local):
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

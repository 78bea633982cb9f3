"""Cartridge metadata in the bucket: incremental replication and restore.

Bucket layout (keys relative to the backend's root)::

    tapes/<barcode>/manifest.json                  the cartridge manifest + segment list
    tapes/<barcode>/p<n>/index/<seg>-<hash>        record-index segment
    tapes/<barcode>/p<n>/chunks/<seg>-<hash>       chunk-map segment

A segment is a run of `SEGMENT_ENTRIES[kind]` consecutive entries of the local
file, byte for byte (the last one may be shorter); `<seg>` is its number in 8
decimal digits and `<hash>` the 64-hex BLAKE3-256 of its bytes, which readers
verify. Segments are immutable: a changed segment gets a new key, so the
manifest that names them can be replaced atomically by a single PUT.

Write order of one replication (the bucket is the source of truth):

1. every chunk named by a chunk-map segment about to be PUT is made durable in
   the bucket first (its pack and pack-index file; `TieredPool.flush()`);
2. the changed segments are PUT (unchanged ones keep their keys);
3. the manifest is PUT, last: only now does the bucket show the new state;
4. `replica.json` (the keys just published) is written locally;
5. objects under `tapes/<barcode>/` the manifest does not name are deleted.

A crash before 3 leaves the previous manifest, whose segments are untouched;
after 3, leftovers are swept by the next run's step 5.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from thur.cloud import NotFound
from thur.replica import SegmentReplicator
from thur.replica import load_replica as _load_replica
from thur.tape.cartridge import MANIFEST, Cartridge
from thur.tape.errors import BackendFailure, MediumCorrupt
from thur.tape.index import CHUNK, RECORD, chunk_ids_in, read_entries
from thur.tape.manifest import Manifest

PREFIX = "tapes/"
KINDS = {"index": RECORD.size, "chunks": CHUNK.size}
# About 3 MiB / 4 MiB per segment: a few PUTs per GiB of metadata, and a
# filemark re-uploads at most one partly filled segment per file.
SEGMENT_ENTRIES = {"index": 131072, "chunks": 65536}


def load_replica(path: Path) -> dict[str, Any]:
    return _load_replica(path, [])


class Replicator(SegmentReplicator):
    """Publishes committed cartridge states to the tier's backend."""

    prefix = PREFIX
    backend_failure = BackendFailure
    corrupt = MediumCorrupt

    def pending(self, cart: Cartridge) -> bool:
        return load_replica(cart.path)["generation"] != cart.generation

    def replicate(self, cart: Cartridge) -> bool:
        """Publish the cartridge's committed state; False when the bucket is current."""
        with self._lock:
            return self._replicate(cart)

    def _replicate(self, cart: Cartridge) -> bool:
        replica = load_replica(cart.path)
        if replica["generation"] == cart.generation:
            return False
        snap = cart.snapshot()
        try:
            published = self._publish(cart, snap, replica)
        except BaseException:
            cart.replication_failed(snap)
            raise
        if not published:
            cart.replication_failed(snap)
            return False
        cart.replicated(snap)
        return True

    def _publish(self, cart: Cartridge, snap: Any, replica: dict[str, Any]) -> bool:
        bc = cart.barcode
        segments: list[dict[str, list[str]]] = []
        for n, p in enumerate(snap.manifest["partitions"]):
            old = replica["segments"][n] if n < len(replica["segments"]) else {}
            counts = {"index": p["objects"], "chunks": p["chunks"]}
            dirty = {"index": snap.dirty[n][0], "chunks": snap.dirty[n][1]}
            part: dict[str, list[str]] = {}
            for kind, size in KINDS.items():
                per, count = SEGMENT_ENTRIES[kind], counts[kind]
                nseg = -(-count // per)
                published = old.get(kind, [])  # none yet: first publish, or an empty list
                keep = published[: min(nseg, dirty[kind] // per)]
                if dirty[kind] >= count and len(published) == nseg:
                    keep = published
                keys = list(keep)
                for seg in range(len(keys), nseg):
                    start, stop = seg * per, min(count, (seg + 1) * per)
                    data = read_entries(cart.path / f"p{n}.{kind}", size, start, stop)
                    if len(data) != (stop - start) * size:
                        raise MediumCorrupt(f"{cart.path}: p{n}.{kind} is short")
                    if kind == "chunks":
                        skip = max(0, dirty[kind] - start) * size
                        self._ensure_durable(list(chunk_ids_in(data[skip:])))
                    key = self.segment_key(bc, f"p{n}/{kind}", seg, data)
                    self._put_once(key, data)
                    keys.append(key)
                part[kind] = keys
            segments.append(part)
        if cart.epoch() != snap.epoch:
            return False  # committed objects were cut meanwhile: retry from the new state
        self._publish_manifest(
            bc,
            cart.path,
            snap.manifest,
            snap.generation,
            segments,
            SEGMENT_ENTRIES,
            {k for part in segments for keys in part.values() for k in keys},
        )
        return True

    # ---- the bucket as the source of truth ------------------------------------------

    def restore(self, barcode: str, dest: Path) -> None:
        """Rebuild a cartridge directory at `dest` from the bucket (dest must not exist)."""
        doc = self._get_manifest(barcode)
        manifest = Manifest.from_json(doc)  # validates format and version

        def fill(tmp: Path) -> None:
            for n, part in enumerate(doc["segments"]):
                for kind in KINDS:
                    with open(tmp / f"p{n}.{kind}", "wb") as f:
                        for skey in part[kind]:
                            f.write(self._get_segment(skey))
                        f.flush()
                        os.fsync(f.fileno())
            for p in manifest.partitions:  # the bucket holds all of it
                p.dirty_objects, p.dirty_chunks, p.replicated_stream = p.objects, p.chunks, p.stream

        self._restore_dir(dest, doc, manifest, MANIFEST, fill)

    def stale_ids(self, cart_path: Path, dirty_chunks: list[int]) -> Iterator[bytes]:
        """Chunk ids the bucket's copy references from chunk-map entries that have changed
        locally since (GC must keep them until the next replication)."""
        replica = load_replica(cart_path)
        per = SEGMENT_ENTRIES["chunks"]
        for n, part in enumerate(replica["segments"]):
            low = dirty_chunks[n] if n < len(dirty_chunks) else 0
            for skey in part["chunks"][low // per :]:
                try:
                    yield from chunk_ids_in(self._call(lambda k=skey: self.backend.get(k), skey))
                except NotFound:
                    continue

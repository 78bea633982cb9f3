"""Publishing a model's local metadata to the bucket as content-addressed segments.

The tape cartridge (thur/tape/replica.py) and the volume (thur/volume/replica.py)
replicate the same way; what differs is only how each cuts its local files into
segments. This module holds the part they share. For an item `<name>` under the
model's key prefix::

    <prefix><name>/manifest.json                  the manifest + the segments' keys
    <prefix><name>/<where>/<seg>-<hash>           one immutable segment

`<seg>` is 8 decimal digits and `<hash>` the 64-hex BLAKE3-256 of the segment's
bytes, which readers verify. A changed segment gets a new key, so the manifest
that names the segments is replaced atomically by one PUT. The subclass PUTs the
changed segments (`_put_once`, after `_ensure_durable` of the chunks they name),
then `_publish_manifest` PUTs the manifest last, writes `replica.json` locally and
sweeps every other object under `<prefix><name>/`.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from blake3 import blake3

from thur.cloud import NotFound, TieredPool
from thur.fsutil import atomic_write_json, fsync_dir

T = TypeVar("T")
REPLICA = "replica.json"  # in the item's directory: what the bucket holds


class _Manifest(Protocol):
    generation: int

    def to_json(self) -> dict[str, Any]: ...


def load_replica(path: Path, no_segments: Any) -> dict[str, Any]:
    """The item's `replica.json`; generation -1 and `no_segments` if never published."""
    try:
        return json.loads((path / REPLICA).read_bytes())
    except FileNotFoundError:
        return {"generation": -1, "segments": no_segments}


def key_matches(key: str, data: bytes) -> bool:
    """Whether `data` has the hash the segment key `key` ends with."""
    return blake3(data).hexdigest() == key.rsplit("-", 1)[1]


class SegmentReplicator:
    """Base of the models' replicators: keys, retried backend calls, the manifest
    PUT, the sweep, listing, existence, deletion and the restore directory."""

    prefix: ClassVar[str]  # "tapes/", "volumes/"
    # The model's typed errors for "chunks are not in the bucket" / "bad bytes".
    backend_failure: ClassVar[type[Exception]]
    corrupt: ClassVar[type[Exception]]

    def __init__(self, tier: TieredPool) -> None:
        self.tier = tier
        self.backend = tier.backend
        self._lock = threading.Lock()  # one replication at a time (background + on demand)

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return self.tier.config.retry.call(fn, self.tier.clock.sleep, what)

    def manifest_key(self, name: str) -> str:
        return f"{self.prefix}{name}/manifest.json"

    def segment_key(self, name: str, where: str, seg: int, data: bytes) -> str:
        return f"{self.prefix}{name}/{where}/{seg:08d}-{blake3(data).hexdigest()}"

    # ---- publishing ----------------------------------------------------------------

    def _ensure_durable(self, ids: Iterable[bytes]) -> None:
        index = self.tier.index
        ids = list(dict.fromkeys(ids))
        known = index.known(ids)
        missing = [c for c in ids if c not in known]
        if missing:
            self.tier.flush()
            known = index.known(missing)
            still = [c for c in missing if c not in known]
            if still:
                raise self.backend_failure(f"{len(still)} chunks are not in the bucket yet")

    def _put_once(self, key: str, data: bytes) -> None:
        self._call(lambda: self.tier.put_once(key, data), key)

    def _publish_manifest(
        self,
        name: str,
        path: Path,
        manifest: dict[str, Any],
        generation: int,
        segments: Any,
        segment_entries: Any,
        keep: set[str],
    ) -> None:
        """Steps 3-5 of a replication: the manifest PUT (last), `replica.json`, the sweep."""
        doc = dict(manifest, segments=segments, segment_entries=segment_entries)
        body = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
        key = self.manifest_key(name)
        self._call(lambda: self.backend.put(key, body), key)
        atomic_write_json(path / REPLICA, {"generation": generation, "segments": segments})
        self._sweep(name, keep)

    def _sweep(self, name: str, keep: set[str]) -> None:
        keep = keep | {self.manifest_key(name)}
        stale = [o.key for o in self.backend.list(f"{self.prefix}{name}/") if o.key not in keep]
        for key in stale:
            self._call(lambda k=key: self.backend.delete(k), key)

    # ---- the bucket as the source of truth ------------------------------------------

    def names(self) -> Iterator[str]:
        """Items with a manifest in the bucket."""
        for o in self.backend.list(self.prefix):
            parts = o.key.split("/")
            if len(parts) == 3 and parts[2] == "manifest.json":
                yield parts[1]

    def exists(self, name: str) -> bool:
        try:
            self._call(lambda: self.backend.head(self.manifest_key(name)), name)
        except NotFound:
            return False
        return True

    def _get_manifest(self, name: str) -> dict[str, Any]:
        key = self.manifest_key(name)
        return json.loads(self._call(lambda: self.backend.get(key), key))

    def _get_segment(self, key: str) -> bytes:
        """A segment's bytes, verified against its key."""
        data = self._call(lambda: self.backend.get(key), key)
        if not key_matches(key, data):
            raise self.corrupt(f"{key}: bytes do not match the key")
        return data

    def _restore_dir(
        self,
        dest: Path,
        doc: dict[str, Any],
        manifest: _Manifest,
        manifest_file: str,
        fill: Callable[[Path], None],
    ) -> None:
        """Build the item's directory beside `dest`: `fill(tmp)` writes its files from
        the segments, then `replica.json` and the manifest; renamed into place last."""
        tmp = dest.with_name(f".restore-{dest.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        fill(tmp)
        atomic_write_json(
            tmp / REPLICA, {"generation": manifest.generation, "segments": doc["segments"]}
        )
        atomic_write_json(tmp / manifest_file, manifest.to_json())
        os.rename(tmp, dest)
        fsync_dir(dest.parent)

    def delete(self, name: str) -> None:
        """Manifest first, so a half-deleted item is never restorable."""
        key = self.manifest_key(name)
        self._call(lambda: self.backend.delete(key), key)
        self._sweep(name, set())

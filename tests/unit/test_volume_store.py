"""VolumeStore: replication to the bucket (metadata last), restore, delete, GC owners."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from tests.unit.tape_kit import make_tier
from tests.unit.test_tape_store import Recording
from tests.unit.volume_kit import SMALL, make_volumes
from thur.cloud import GarbageCollector, GcConfig, LocalBackend
from thur.pool import ChunkOwner
from thur.volume.table import ids_in

KiB, MiB = 1024, 1 << 20


def test_metadata_reaches_the_bucket_last_and_restores(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    rec = Recording(tmp_path / "bucket")
    tier.backend = rec
    store = make_volumes(tmp_path, tier=tier)
    vol = store.create("vol1", 4 * MiB, **SMALL)
    data = random.Random(1).randbytes(256 * KiB)
    vol.write(8, data)
    vol.flush()
    serial = vol.serial
    assert store.replicate() == 1
    keys = rec.puts
    last = keys.index("volumes/vol1/manifest.json")
    assert any(k.startswith("packs/") for k in keys[:last])
    assert any(k.startswith("index/") for k in keys[:last])
    assert any(k.startswith("volumes/vol1/table/") for k in keys[:last])
    assert store.replicate() == 0  # nothing changed: nothing published
    # Overwrite, unmap and grow: one segment replaced, the old one swept.
    vol.write(8, b"n" * 512)
    vol.unmap(100, 40)
    vol.resize(16384)
    vol.flush()
    store.replicate()
    listed = {o.key for o in rec.list("volumes/vol1/")}
    assert len(listed) == 2  # manifest + one table segment
    doc = json.loads((tmp_path / "bucket/volumes/vol1/manifest.json").read_bytes())
    assert doc["num_blocks"] == 16384 and doc["serial"] == serial
    expected = vol.read(0, 600)
    store.shutdown()
    tier.close()

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    tier2 = make_tier(fresh)
    tier2.backend = LocalBackend(tmp_path / "bucket", fsync=False)
    tier2.sync_index()
    store2 = make_volumes(fresh, tier=tier2)
    assert store2.restore_all() == ["vol1"]
    again = store2.open("vol1")
    assert again.serial == serial and again.num_blocks == 16384
    assert again.read(0, 600) == expected
    assert again.is_mapped(100, 40) == [(100, 40, False)]
    store2.shutdown(replicate=False)
    tier2.close()


def test_fence_waits_for_upload_publishes_at_the_fence(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    store = make_volumes(tmp_path, tier=tier)
    vol = store.create("up", 1 * MiB, fence_waits_for_upload=True, **SMALL)
    vol.write(0, b"u" * 4096, fua=True)
    assert tier.store.stats().pinned_bytes == 0  # every chunk is in the bucket
    assert (tmp_path / "bucket/volumes/up/manifest.json").exists()
    vol.write(16, b"v" * 4096)
    vol.flush()
    assert tier.store.stats().pinned_bytes == 0
    store.shutdown(replicate=False)


def test_background_replication_after_restart(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    store = make_volumes(tmp_path, tier=tier, replicate_delay=0.05)
    vol = store.create("bg", 1 * MiB, **SMALL)
    vol.write(0, b"b" * 8192)
    vol.flush()
    store._open.pop("bg").abandon()  # a crash before anything was published
    store2 = make_volumes(tmp_path, tier=tier, replicate_delay=0.05)
    store2.start()  # queues every local volume: the segments are compared
    for _ in range(200):
        if (tmp_path / "bucket/volumes/bg/manifest.json").exists():
            break
        time.sleep(0.02)
    store2.shutdown()
    doc = json.loads((tmp_path / "bucket/volumes/bg/manifest.json").read_bytes())
    assert len(doc["segments"]) == 1


def test_delete_removes_the_bucket_copy_manifest_first(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    store = make_volumes(tmp_path, tier=tier)
    store.create("gone", 1 * MiB, **SMALL).write(0, b"g" * 2048)
    store.replicate()
    store.delete("gone")
    assert store.list() == []
    assert not list(tier.backend.list("volumes/gone/"))
    assert not store.exists("gone")
    store.shutdown(replicate=False)


def test_gc_keeps_live_pages_and_what_the_bucket_still_names(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    store = make_volumes(tmp_path, tier=tier)
    rnd = random.Random(3)
    keep = store.create("keep", 1 * MiB, **SMALL)
    old = rnd.randbytes(64 * KiB)
    keep.write(0, old)
    keep.flush()
    store.replicate()
    new = rnd.randbytes(64 * KiB)
    keep.write(0, new)  # the bucket still names `old`'s chunks until the next publish
    keep.flush()
    gone = store.create("gone", 1 * MiB, **SMALL)
    gone.write(0, rnd.randbytes(64 * KiB))
    gone.flush()
    store.close("keep")  # one closed owner, one open
    assert all(isinstance(o, ChunkOwner) for o in store.owners())
    tier.flush()
    store.delete("gone")
    before = tier.store.stats().chunks
    report = GarbageCollector(tier, store.owners, GcConfig(grace=0, repack_below=0.99)).run()
    assert report.local.chunks > 0 and tier.store.stats().chunks < before
    assert store.open("keep").read(0, 128) == new
    # A restore from the bucket now would bring back `old`: its chunks must live.
    doc = json.loads((tmp_path / "bucket/volumes/keep/manifest.json").read_bytes())
    (segment,) = doc["segments"].values()
    stale = [cid for _p, cid in ids_in(tier.backend.get(segment), 2 * KiB)]
    assert b"".join(tier.get(c) for c in stale) == old
    store.shutdown()
    tier.close()

"""CartridgeStore: barcodes, lifecycle, bucket replication (order, restore), dedup, GC."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.tape_kit import SMALL_CHUNKS, make_store, make_tier
from thur.cloud import GarbageCollector, GcConfig, LocalBackend
from thur.pool import ChunkOwner
from thur.tape import WormViolation
from thur.tape.manifest import InvalidBarcode, parse_barcode
from thur.tape.store import CartridgeExists, CartridgeStore, UnknownCartridge

KiB = 1024
MB = 1_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CartridgeStore]:
    s = make_store(tmp_path)
    yield s
    s.shutdown(replicate=False)


# ---- barcodes and lifecycle ------------------------------------------------------------


@pytest.mark.parametrize(
    "good", ["ABC123L8", "ABC123", "A1B2C3D", "XYZ999M8", "CLN001CU", "CLN002L1"]
)
def test_valid_barcodes(good: str) -> None:
    assert parse_barcode(good).label == good


@pytest.mark.parametrize(
    "bad", ["abc123L8", "AB12", "ABCDEFGHI", "ABC-12L8", "ABC123L5", "ABC123CU", "", "ABC 23L8"]
)
def test_invalid_barcodes(bad: str) -> None:
    with pytest.raises(InvalidBarcode):
        parse_barcode(bad)


def test_create_list_delete(store: CartridgeStore) -> None:
    a = store.create("AAA001L8")
    store.create("CLN001CU")
    with pytest.raises(CartridgeExists):
        store.create("AAA001L8")
    with pytest.raises(InvalidBarcode):
        store.create("WRM001LW")  # WORM media id without worm=True
    w = store.create("WRM001LW", worm=True)
    assert w.worm and not a.worm
    assert store.open("CLN001CU").cleaning and not a.cleaning
    assert store.list() == ["AAA001L8", "CLN001CU", "WRM001LW"]
    assert store.open("AAA001L8") is a
    store.delete("AAA001L8")
    assert store.list() == ["CLN001CU", "WRM001LW"]
    with pytest.raises(UnknownCartridge):
        store.open("AAA001L8")
    w.write(b"x")
    with pytest.raises(WormViolation):
        w.format(None)


def test_write_protect_and_info(store: CartridgeStore) -> None:
    cart = store.create("INF001L8", capacity=10 * MB)
    cart.write(b"y" * 5000)
    info = store.info("INF001L8")
    assert info["partitions"][0]["used"] == 5000
    assert info["local_only_bytes"] == 5000
    cart.set_write_protected(True)
    store.close("INF001L8")
    assert store.open("INF001L8").write_protected


# ---- the bucket ---------------------------------------------------------------------------


class Recording(LocalBackend):
    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.puts: list[str] = []

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        super().put(key, data, if_absent=if_absent)
        self.puts.append(key)


def test_metadata_reaches_the_bucket_last_and_restores(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    rec = Recording(tmp_path / "bucket")
    tier.backend = rec
    store = make_store(tmp_path, tier=tier)
    cart = store.create("BKT001L8")
    rnd = random.Random(1)
    objs: list[bytes | None] = [rnd.randbytes(rnd.randrange(1, 50 * KiB)) for _ in range(100)]
    for o in objs:
        cart.write(o)  # type: ignore[arg-type]
    cart.write_filemarks(1)
    objs.append(None)
    assert cart.local_only_bytes() > 0
    assert store.replicate() == 1
    assert cart.local_only_bytes() == 0
    keys = rec.puts
    last = keys.index("tapes/BKT001L8/manifest.json")
    assert any(k.startswith("packs/") for k in keys[:last])
    assert any(k.startswith("index/") for k in keys[:last])
    assert any(k.startswith("tapes/BKT001L8/p0/chunks/") for k in keys[:last])
    assert not [k for k in keys[last + 1 :] if not k.startswith("tapes/")]
    doc = json.loads((tmp_path / "bucket/tapes/BKT001L8/manifest.json").read_bytes())
    assert doc["partitions"][0]["objects"] == 101
    # Overwrite in the middle, replicate again: superseded segments are swept.
    cart.locate(0, 50)
    cart.write(b"new")
    cart.flush()
    store.replicate()
    listed = {o.key for o in rec.list("tapes/BKT001L8/")}
    assert len(listed) == 3  # manifest + one index segment + one chunk-map segment
    store.shutdown()
    tier.close()

    # A fresh machine: empty data dir, same bucket.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    tier2 = make_tier(fresh)
    tier2.backend = LocalBackend(tmp_path / "bucket", fsync=False)
    tier2.sync_index()
    store2 = make_store(fresh, tier=tier2)
    assert store2.restore_all() == ["BKT001L8"]
    again = store2.open("BKT001L8")
    got = []
    while not again.position().eod:
        got.append(again.read())
    assert got == objs[:50] + [b"new"]
    store2.shutdown(replicate=False)
    tier2.close()


def test_dedup_of_same_and_shifted_backups(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    store = make_store(tmp_path, tier=tier)
    data = random.Random(2).randbytes(6 * MB)

    def backup(barcode: str, stream: bytes) -> int:
        before = tier.store.stats().chunks
        cart = store.create(barcode)
        for i in range(0, len(stream), 64 * KiB):
            cart.write(stream[i : i + 64 * KiB])
        cart.write_filemarks(1)
        return tier.store.stats().chunks - before

    first = backup("DUP001L8", data)
    assert first > 100
    assert backup("DUP002L8", data) <= 0.05 * first
    assert backup("DUP003L8", b"!" + data) <= 0.05 * first
    store.shutdown(replicate=False)
    tier.close()


def test_gc_keeps_every_cartridge_and_frees_a_deleted_one(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    store = make_store(tmp_path, tier=tier)
    rnd = random.Random(3)
    keep = store.create("GCK001L8")
    kept = [rnd.randbytes(20 * KiB) for _ in range(50)]
    for r in kept:
        keep.write(r)
    keep.write_filemarks(1)
    gone = store.create("GCD001L8")
    for _ in range(50):
        gone.write(rnd.randbytes(20 * KiB))
    gone.write_filemarks(1)
    store.close("GCK001L8")  # one open, one closed owner
    unflushed = store.open("GCK001L8")
    unflushed.space_eod()
    unflushed.write(rnd.randbytes(200 * KiB))  # in flight: must be kept too
    store.replicate()
    owners = store.owners()
    assert all(isinstance(o, ChunkOwner) for o in owners)
    store.delete("GCD001L8")
    before = tier.store.stats().chunks
    report = GarbageCollector(tier, store.owners, GcConfig(grace=0)).run()
    assert report.local.chunks > 0 and tier.store.stats().chunks < before
    unflushed.locate(0, 0)
    assert [unflushed.read() for _ in range(50)] == kept
    unflushed.flush()
    store.shutdown(replicate=False)
    tier.close()


def test_small_chunker_params_are_pinned_in_the_manifest(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.create("PIN001L8").write(b"z" * 100)
    store.shutdown(replicate=False)
    other = CartridgeStore(tmp_path / "tapes", make_tier(tmp_path))  # default chunker
    assert other.open("PIN001L8").chunker_params == SMALL_CHUNKS
    other.shutdown(replicate=False)



def test_blank_and_filemark_only_cartridges_replicate_and_restore(tmp_path: Path) -> None:
    """A partition with no records (blank, or only filemarks) must not block publishing
    the cartridge: it once raised KeyError('index') and never reached the bucket."""
    tier = make_tier(tmp_path)
    store = make_store(tmp_path, tier=tier)
    store.create("BLANK1L8")
    store.create("MARKS1L8").write_filemarks(2)
    store.replicate()
    store.shutdown()
    tier.close()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    tier2 = make_tier(fresh)
    tier2.backend = LocalBackend(tmp_path / "bucket", fsync=False)
    tier2.sync_index()
    store2 = make_store(fresh, tier=tier2)
    assert sorted(store2.restore_all()) == ["BLANK1L8", "MARKS1L8"]
    marks = store2.open("MARKS1L8")
    assert [marks.read(), marks.read()] == [None, None]
    assert marks.position().eod
    store2.shutdown(replicate=False)
    tier2.close()

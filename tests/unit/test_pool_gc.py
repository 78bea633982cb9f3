"""GC: owners, mark set, guard, grace, local and bucket sweep, repack, dry run, batched index."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from thur.cloud import (
    GarbageCollector,
    GcConfig,
    GcReport,
    LocalBackend,
    PackIndex,
    TierConfig,
    TieredPool,
)
from thur.cloud.index import INDEX_PREFIX, decode_index_file
from thur.cloud.pack import pack_id_from_key, parse_pack
from thur.pool import (
    ChunkOwner,
    Codec,
    CompressionPolicy,
    LocalStore,
    ManualClock,
    MarkSet,
    PoolConfig,
    chunk_id,
)


@dataclass
class Owner:
    name: str
    ids: list[bytes] = field(default_factory=list)
    during: list = field(default_factory=list)  # callables run mid-iteration

    def chunk_ids(self) -> Iterator[bytes]:
        for i, cid in enumerate(list(self.ids)):
            if i == 1:
                for fn in self.during:
                    fn()
            yield cid


class HookClock(ManualClock):
    """A manual clock whose sleep runs callbacks (things that happen during the grace)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_sleep: list = []

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        for fn in self.on_sleep:
            fn()


def make(
    tmp: Path, name: str = "a", *, pack_target: int = 20_000, batch: int = 8, clock=None
) -> TieredPool:
    bucket = tmp / "bucket"
    bucket.mkdir(exist_ok=True)
    clock = clock or ManualClock()
    store = LocalStore(
        PoolConfig(
            tmp / name,
            budget_bytes=1 << 24,
            disk_free_floor=0,
            fsync=False,
            max_wait=0.0,
            compression=CompressionPolicy(Codec.NONE),
        ),
        clock=clock,
    )
    index = PackIndex(tmp / name / "index.sqlite")
    config = TierConfig(pack_target=pack_target, workers=2, index_batch_packs=batch)
    return TieredPool(store, LocalBackend(bucket, fsync=False), index, config, clock=clock)


def data(i: int, n: int = 4000) -> bytes:
    return (f"<{i}>".encode() * n)[:n]


def bucket_keys(tier: TieredPool, prefix: str) -> set[str]:
    return {i.key for i in tier.backend.list(prefix)}


def assert_bucket_consistent(tier: TieredPool) -> None:
    """Every listed index file names only listed packs, and entries match the packs."""
    packs = {pack_id_from_key(k) for k in bucket_keys(tier, "packs/")}
    for key in bucket_keys(tier, INDEX_PREFIX):
        for e in decode_index_file(key, tier.backend.get(key)):
            assert e.pack_id in packs, f"{key} names a missing pack"


def gc(tier: TieredPool, owners: list[Owner], **kw: object) -> GcReport:
    return GarbageCollector(tier, lambda: owners, GcConfig(**kw)).run()  # type: ignore[arg-type]


def test_owner_protocol_and_mark_set(tmp_path: Path) -> None:
    assert isinstance(Owner("x"), ChunkOwner)
    marks = MarkSet(tmp_path / "m.sqlite")
    ids = (chunk_id(i.to_bytes(4, "big")) for i in range(10_000))  # a generator: streamed
    assert marks.add(ids) == 10_000 and len(marks) == 10_000
    probe = [chunk_id(i.to_bytes(4, "big")) for i in (5, 9_999, 10_000, 20_000)]
    assert marks.marked(probe) == set(probe[:2])
    marks.close()
    assert not (tmp_path / "m.sqlite").exists()


def test_gc_frees_dead_packs_and_keeps_referenced(tmp_path: Path) -> None:
    tier = make(tmp_path)
    keep = Owner("tape1", [tier.put(data(i)).chunk_id for i in range(5)])
    tier.flush()  # 20 KB packs: chunks 0-3 in one pack, 4 in another
    dead = Owner("tape2", [tier.put(data(i)).chunk_id for i in range(10, 20)])
    tier.flush()
    packs_before = bucket_keys(tier, "packs/")
    report = gc(tier, [keep], grace=5.0)
    assert report.packs_deleted >= 2 and report.packs_repacked == 0
    assert report.local.chunks == 10 and report.owners == 1 and report.ids_marked == 5
    assert tier.clock.sleeps == [5.0]  # type: ignore[attr-defined]
    assert len(bucket_keys(tier, "packs/")) == len(packs_before) - report.packs_deleted
    assert report.bucket_bytes_freed > 10 * 4000
    for cid in dead.ids:
        assert cid not in tier.index and not tier.store.contains(cid)
    for i, cid in enumerate(keep.ids):
        tier.store.discard(cid)
        assert tier.get(cid) == data(i)  # from the bucket
    assert_bucket_consistent(tier)
    assert not list((tmp_path / "a" / "gc").iterdir())  # scratch mark set removed
    assert gc(tier, [keep]).packs_deleted == 0  # idempotent


def test_repack_below_threshold_and_rewrite_index_files(tmp_path: Path) -> None:
    tier = make(tmp_path, pack_target=100_000)
    ids = [tier.put(data(i)).chunk_id for i in range(20)]  # one pack
    assert tier.flush().packs == 1
    owner = Owner("vol", ids[:3])  # 15 % live
    other = make(tmp_path, "b", pack_target=100_000)
    other.sync_index()  # a second machine that learnt the old layout
    report = gc(tier, [owner], repack_below=0.5)
    assert (report.packs_repacked, report.packs_written, report.packs_deleted) == (1, 1, 0)
    assert report.bytes_copied == 3 * 4000
    (pack,) = bucket_keys(tier, "packs/")
    raw = tier.backend.get(pack)
    assert {e.chunk_id for e in parse_pack(pack_id_from_key(pack), raw)} == set(ids[:3])
    assert_bucket_consistent(tier)
    # The other machine's stale location fails, it re-learns the bucket and reads.
    assert other.get(ids[1]) == data(1)
    assert other.sync_index().packs_forgotten == 1 or ids[5] not in other.index
    assert ids[5] not in other.index
    # A fresh machine learns only the new layout.
    fresh = make(tmp_path, "c")
    fresh.sync_index()
    assert {cid for cid in ids if cid in fresh.index} == set(ids[:3])


def test_dry_run_reports_and_changes_nothing(tmp_path: Path) -> None:
    tier = make(tmp_path, pack_target=100_000)
    ids = [tier.put(data(i)).chunk_id for i in range(10)]
    tier.flush()
    tier.put(data(99))  # pinned, unreferenced
    before = (bucket_keys(tier, ""), tier.store.stats(), len(tier.index))
    report = gc(tier, [Owner("t", ids[:2])], dry_run=True)
    assert report.dry_run and report.packs_repacked == 1 and report.local.chunks == 9
    assert report.bucket_bytes_freed >= 8 * 4000 and report.local.bytes >= 9 * 4000
    assert (bucket_keys(tier, ""), tier.store.stats(), len(tier.index)) == before
    assert tier.clock.sleeps == []  # type: ignore[attr-defined]  # no grace wait needed


def test_put_during_mark_is_kept(tmp_path: Path) -> None:
    """A dedup hit on a dead chunk while GC runs makes it live: never swept."""
    tier = make(tmp_path, pack_target=100_000)
    ids = [tier.put(data(i)).chunk_id for i in range(6)]
    tier.flush()
    for cid in ids[4:]:
        tier.store.discard(cid)  # evicted: only the bucket holds 4 and 5
    late = Owner("late")
    owner = Owner("t", ids[:2])
    # While GC iterates, a writer re-writes chunks 3 (cached) and 5 (bucket only).
    owner.during.append(lambda: late.ids.extend(tier.put(data(i)).chunk_id for i in (3, 5)))
    report = gc(tier, [late, owner], repack_below=0.9)  # `late` is marked before it grows
    assert report.packs_repacked == 1
    for i in (0, 1, 3, 5):
        tier.store.discard(ids[i])
        assert tier.get(ids[i]) == data(i)
    assert ids[2] not in tier.index and ids[4] not in tier.index


def test_grace_period_covers_a_put_declared_late(tmp_path: Path) -> None:
    clock = HookClock()
    tier = make(tmp_path, clock=clock)
    owner = Owner("t")
    cid = tier.put(data(1)).chunk_id  # put() returned; the owner has not recorded it yet
    tier.flush()
    clock.on_sleep.append(lambda: owner.ids.append(cid))  # ...it does during the grace
    gc(tier, [owner], grace=2.0)
    tier.store.discard(cid)
    assert tier.get(cid) == data(1)


def test_retain_protects_references_copied_without_put(tmp_path: Path) -> None:
    tier = make(tmp_path)
    src = Owner("src", [tier.put(data(i)).chunk_id for i in range(3)])
    tier.flush()
    dst = Owner("dst")

    def copy_then_delete_source() -> None:  # runs mid-mark, after dst was iterated
        tier.retain(src.ids)
        dst.ids.extend(src.ids)
        src.ids.clear()

    first = Owner("first", [], [copy_then_delete_source])
    first.ids.extend([b"\0" * 32, b"\1" * 32])  # ids nobody stores: harmless
    gc(tier, [dst, first, src])
    for i, cid in enumerate(dst.ids):
        tier.store.discard(cid)
        assert tier.get(cid) == data(i)


class ResurrectingGc(GarbageCollector):
    """Re-references a dead chunk between the plan and the commit."""

    revive: bytes = b""

    def _repack(self, doomed, report):  # noqa: ANN001, ANN202
        out = super()._repack(doomed, report)
        self.tier.put(self.revive)
        return out


def test_condemned_pack_referenced_again_is_kept(tmp_path: Path) -> None:
    tier = make(tmp_path, pack_target=100_000)
    ids = [tier.put(data(i)).chunk_id for i in range(8)]
    tier.flush()
    for cid in ids:
        tier.store.discard(cid)
    collector = ResurrectingGc(tier, lambda: [Owner("t", ids[:1])], GcConfig())
    collector.revive = data(6)
    report = collector.run()
    assert report.packs_resurrected == 1 and report.packs_repacked == 0
    assert tier.get(ids[6]) == data(6) and tier.get(ids[0]) == data(0)
    assert_bucket_consistent(tier)


def test_index_files_are_batched_across_packs(tmp_path: Path) -> None:
    tier = make(tmp_path, pack_target=9_000, batch=8)  # 2 chunks per pack
    for i in range(40):
        tier.put(data(i))
    report = tier.flush()
    assert (report.packs, report.index_files) == (20, 3)  # 8 + 8 + 4 packs
    assert len(bucket_keys(tier, "index/")) == 3
    assert tier.store.stats().pinned_bytes == 0
    fresh = make(tmp_path, "b")
    assert fresh.sync_index().packs_scanned == 0 and len(fresh.index) == 40


def test_unsealed_flush_keeps_partial_batch_pinned(tmp_path: Path) -> None:
    tier = make(tmp_path, pack_target=9_000, batch=8)
    for i in range(6):
        tier.put(data(i))
    report = tier._flush(seal=False)  # what the background uploader does
    assert (report.packs, report.index_files) == (3, 0)
    assert tier.store.stats().pinned_bytes > 0  # not durable until indexed
    assert tier.flush().index_files == 1 and tier.store.stats().pinned_bytes == 0


def test_index_v1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE entries(chunk_id BLOB PRIMARY KEY, pack_id BLOB NOT NULL,"
        " offset INTEGER NOT NULL, length INTEGER NOT NULL, plain_len INTEGER NOT NULL,"
        " codec INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE packs(pack_id BLOB PRIMARY KEY) WITHOUT ROWID;"
        "CREATE TABLE index_files(key TEXT PRIMARY KEY) WITHOUT ROWID;"
        "INSERT INTO index_files VALUES('index/x');"
    )
    db.execute("INSERT INTO entries VALUES(?, ?, 8, 3, 3, 0)", (b"c" * 32, b"p" * 32))
    db.commit()
    db.close()
    index = PackIndex(path)
    entry = index.lookup(b"c" * 32)
    assert entry is not None and entry.pack_id == b"p" * 32
    assert index.known_index_files() == set()  # re-read at the next sync
    index.close()


@pytest.mark.parametrize("kind", ["pinned", "durable"])
def test_local_sweep_only_touches_chunks_older_than_the_run(tmp_path: Path, kind: str) -> None:
    tier = make(tmp_path)
    old = tier.put(data(1)).chunk_id
    if kind == "durable":
        tier.flush()
    report = gc(tier, [])
    assert report.local.chunks == 1 and not tier.store.contains(old)

"""Segment files: records appended, read back by place, freed by holes, segments dropped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thur.pool import (
    ChunkCorrupt,
    ChunkMissing,
    Codec,
    CompressionPolicy,
    LocalStore,
    PoolConfig,
    chunk_id,
)
from thur.pool import segments as segments_mod
from thur.pool.segments import SegmentFiles


def blob(i: int, n: int = 5000) -> bytes:
    return i.to_bytes(4, "big") * (n // 4)


def test_append_read_release(tmp_path: Path) -> None:
    segs = SegmentFiles(tmp_path, fsync=True)
    a = segs.append(b"a" * 32, [b"head", b"payload-a"])
    b = segs.append(b"b" * 32, [b"payload-b"])
    segs.sync({a.seg, b.seg})
    assert (a.seg, a.off, a.size) == (1, 0, 32 + 4 + 9) and (b.seg, b.off) == (1, a.size)
    assert segs.read(b"a" * 32, a) == b"headpayload-a"
    with pytest.raises(ChunkCorrupt):
        segs.read(b"c" * 32, b)  # another record's place
    segs.release(a)
    with pytest.raises(ChunkCorrupt):
        segs.read(b"a" * 32, a)  # a hole now
    assert segs.read(b"b" * 32, b) == b"payload-b"
    assert not segs.droppable(1)  # still taking appends
    segs.close()
    segs.settled(a)
    segs.settled(b)
    assert segs.droppable(1)


def test_full_segments_retire_and_empty_ones_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments_mod, "SEGMENT_BYTES", 12_000)
    store = LocalStore(
        PoolConfig(
            tmp_path / "pool",
            budget_bytes=1 << 20,
            disk_free_floor=0,
            compression=CompressionPolicy(Codec.NONE),
        )
    )
    # 5 080-byte records: a segment retires with its third (past 12 000 bytes).
    ids = [store.put(blob(i)).chunk_id for i in range(7)]
    seg_dir = tmp_path / "pool" / "segments"
    assert len(list(seg_dir.iterdir())) == 3
    store.discard_many(ids[:3])  # every record of the first (retired) segment
    assert len(list(seg_dir.iterdir())) == 2
    store.discard_many(ids[3:4])  # one of the second: it stays
    assert len(list(seg_dir.iterdir())) == 2
    assert [store.get(c) for c in ids[4:]] == [blob(i) for i in range(4, 7)]
    store.discard_many(ids[6:])  # the last segment still takes appends: kept
    assert len(list(seg_dir.iterdir())) == 2
    store.close()
    again = LocalStore(PoolConfig(tmp_path / "pool", budget_bytes=1 << 20, disk_free_floor=0))
    assert [again.get(c) for c in ids[4:6]] == [blob(i) for i in range(4, 6)]
    assert again.recovery.orphans_swept == 1  # the emptied last segment, at open
    again.close()


@settings(max_examples=20, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from("pdr"), st.integers(0, 30)), min_size=1, max_size=50)
)
def test_random_puts_discards_and_reopens_keep_every_row_readable(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]
) -> None:
    root = tmp_path_factory.mktemp("segs") / "pool"

    def open_store() -> LocalStore:
        return LocalStore(
            PoolConfig(
                root,
                budget_bytes=1 << 20,
                disk_free_floor=0,
                fsync=False,
                put_workers=2,
                compression=CompressionPolicy(Codec.NONE),
            )
        )

    store = open_store()
    present: set[int] = set()
    for op, i in ops:
        if op == "p":
            store.put(blob(i, 1000 + 97 * i))
            present.add(i)
        elif op == "d":
            store.discard(chunk_id(blob(i, 1000 + 97 * i)))
            present.discard(i)
        else:
            store.close()
            store = open_store()
            assert store.recovery.lost_pinned == []
        for j in present:
            assert store.get(chunk_id(blob(j, 1000 + 97 * j))) == blob(j, 1000 + 97 * j)
        assert store.stats().chunks == len(present)
    store.close()
    allocated = sum(os.path.getsize(p) for p in (root / "segments").iterdir())
    assert allocated >= sum(1000 + 97 * j for j in present)


def test_a_chunk_freed_while_it_is_read_is_missing_never_half_zeroed(tmp_path: Path) -> None:
    store = LocalStore(PoolConfig(tmp_path / "pool", budget_bytes=1 << 20, disk_free_floor=0))
    cid = store.put(blob(1)).chunk_id
    keep = store.put(blob(2)).chunk_id
    real = store._segs.read

    def read_then_evicted(c: bytes, loc: object) -> bytes:
        raw = real(c, loc)  # type: ignore[arg-type]
        store.discard(c)  # freed (row deleted, hole punched) right after the bytes were read
        return raw

    store._segs.read = read_then_evicted  # type: ignore[method-assign]
    with pytest.raises(ChunkMissing):
        store.get(cid)
    store._segs.read = real  # type: ignore[method-assign]
    assert store.get(keep) == blob(2)
    store.close()


def test_a_pool_of_an_unknown_newer_schema_is_refused_by_name(tmp_path: Path) -> None:
    import sqlite3

    from thur.pool import PoolStateError

    LocalStore(PoolConfig(tmp_path / "pool", budget_bytes=1 << 20, disk_free_floor=0)).close()
    db = sqlite3.connect(tmp_path / "pool" / "pool.sqlite", isolation_level=None)
    db.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(PoolStateError, match="schema 9"):
        LocalStore(PoolConfig(tmp_path / "pool", budget_bytes=1 << 20, disk_free_floor=0))


def test_the_open_time_merge_of_chunk_files_reads_an_index_not_every_row(
    tmp_path: Path,
) -> None:
    import sqlite3

    from thur.pool.recovery import _rows

    store = LocalStore(PoolConfig(tmp_path / "pool", budget_bytes=1 << 24, disk_free_floor=0))
    store.put_many([blob(i) for i in range(20)])
    store.close()
    db = sqlite3.connect(tmp_path / "pool" / "pool.sqlite", isolation_level=None)
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT id, durable FROM chunks"
        " WHERE id > ? AND seg IS NULL ORDER BY id LIMIT ?",
        (b"", 10),
    ).fetchall()
    assert "chunks_in_files" in " ".join(str(step[-1]) for step in plan)
    assert list(_rows(db)) == []  # every row is in a segment
    db.close()

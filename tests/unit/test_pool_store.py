"""The local pool: verified reads, durable state, budget, eviction, backpressure."""

from __future__ import annotations

import errno
import gc
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.chunk_kit import chunk_bytes, overwrite
from thur.pool import (
    BackpressureTimeout,
    ChunkCorrupt,
    ChunkMissing,
    Codec,
    CompressionPolicy,
    LocalStore,
    ManualClock,
    PoolConfig,
    chunk_id,
)
from thur.pool.chunkfile import HEADER_V2_LEN
from thur.pool.chunkid import CHUNK_ID_LEN

HEADER = HEADER_V2_LEN + CHUNK_ID_LEN  # bytes a chunk takes besides its payload: id + file header


def cfg(tmp: Path, **kw: object) -> PoolConfig:
    base: dict[str, object] = dict(
        data_dir=tmp / "pool",
        budget_bytes=10_000,
        disk_free_floor=0,
        max_wait=10.0,
        poll_interval=0.005,
        compression=CompressionPolicy(Codec.NONE),
    )
    base.update(kw)
    return PoolConfig(**base)  # type: ignore[arg-type]


def blob(i: int, n: int = 1000) -> bytes:
    return i.to_bytes(4, "big") * (n // 4)


def test_put_get_dedup_and_reopen(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path, compression=CompressionPolicy(Codec.ZSTD)))
    r = store.put(blob(1))
    assert r.new and r.chunk_id == chunk_id(blob(1)) and r.stored < 1000  # compressed
    assert not store.put(blob(1)).new
    assert store.get(r.chunk_id) == blob(1)
    assert store.pending() == [(r.chunk_id, r.stored)]
    store.close()
    again = LocalStore(cfg(tmp_path))  # codec setting changed: old chunk still reads
    assert again.get(r.chunk_id) == blob(1)
    assert again.stats().pinned_bytes == r.stored
    assert again.recovery.orphans_swept == 0 and not again.recovery.lost_pinned
    with pytest.raises(ChunkMissing):
        again.get(b"\0" * 32)


@pytest.mark.parametrize("damage", ["flip", "truncate", "header", "swap", "id"])
def test_corrupt_bytes_are_chunk_corrupt_never_wrong_bytes(tmp_path: Path, damage: str) -> None:
    store = LocalStore(cfg(tmp_path))
    other = store.put(blob(2)).chunk_id
    cid = store.put(blob(1)).chunk_id  # appended after `other`: the segment's last record
    raw = bytearray(chunk_bytes(store, cid))
    if damage == "flip":
        raw[HEADER_V2_LEN + 10] ^= 0x40
        overwrite(store, cid, bytes(raw))
    elif damage == "truncate":
        path, off, length = store.locate(cid)
        os.truncate(path, off + length - 1)
    elif damage == "header":
        overwrite(store, cid, b"XXXX")
    elif damage == "swap":  # well-formed bytes of another chunk where this one's are
        overwrite(store, cid, chunk_bytes(store, other))
    else:  # the record's id is not this chunk's: a row pointing at the wrong place
        overwrite(store, cid, b"\1" * 8, at=-CHUNK_ID_LEN)
    with pytest.raises(ChunkCorrupt):
        store.get(cid)
    assert store.get(other) == blob(2)


def test_recovery_frees_unacknowledged_bytes_and_drops_stale_rows(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path))
    kept = store.put(blob(1)).chunk_id
    durable = store.put(blob(2)).chunk_id
    pinned_lost = store.put(blob(3)).chunk_id
    store.mark_durable([durable])
    seg_path, kept_at, kept_len = store.locate(kept)
    store.close()
    # The disk lost the last two records (as if fsync had lied), and a record
    # that was never acknowledged was appended after what is left.
    os.truncate(seg_path, kept_at + kept_len)
    with open(seg_path, "ab") as f:
        f.write(b"never acknowledged")
    (store.root / "tmp" / "half-written").write_bytes(b"x")
    stray = store.root / "segments" / f"{999:016x}.seg"  # a segment no row points into
    stray.write_bytes(b"junk")
    again = LocalStore(cfg(tmp_path))
    rec = again.recovery
    assert (rec.tmp_removed, rec.orphans_swept, rec.durable_rows_dropped) == (1, 1, 1)
    assert rec.segments_trimmed == 1 and rec.lost_pinned == [pinned_lost]
    assert not stray.exists() and os.path.getsize(seg_path) == kept_at + kept_len
    assert again.get(kept) == blob(1)
    assert again.stats().chunks == 1
    again.put(blob(4))  # appends go on in a new segment, past every old number
    assert again.locate(chunk_id(blob(4)))[0] > str(stray)


def test_schema_1_pool_of_chunk_files_opens_reads_and_frees(tmp_path: Path) -> None:
    """A pool written before segments: its chunk files stay readable and evictable."""
    import sqlite3

    from thur.pool import chunkfile
    from thur.pool.chunkfile import Encoded
    from thur.pool.layout import ChunkFiles

    root = tmp_path / "pool"
    files = ChunkFiles(root, fsync=False)
    db = sqlite3.connect(root / "pool.sqlite", isolation_level=None)
    db.executescript(
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES('schema_version', '1');"
        "CREATE TABLE chunks(id BLOB PRIMARY KEY, size INTEGER NOT NULL,"
        " durable INTEGER NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE INDEX chunks_by_state ON chunks(durable, seq);"
    )
    old = [chunk_id(blob(i)) for i in range(3)]
    for seq, (i, cid) in enumerate(zip(range(3), old, strict=True), 1):
        raw = chunkfile.encode(Encoded(0, 1000, blob(i)))
        files.write(cid, raw)
        db.execute("INSERT INTO chunks VALUES(?, ?, ?, ?)", (cid, len(raw), 1, seq))
    orphan = chunk_id(b"never acknowledged")
    files.write(orphan, b"junk")
    db.close()
    store = LocalStore(cfg(tmp_path, budget_bytes=3 * (1000 + HEADER)))
    assert store.recovery.orphans_swept == 1 and not os.path.exists(files.path(orphan))
    assert [store.get(c) for c in old] == [blob(0), blob(1), blob(2)]
    assert store.locate(old[0]) == (files.path(old[0]), 0, 1000 + HEADER_V2_LEN)
    store.put(blob(7))  # a new chunk goes to a segment; the oldest file is evicted for it
    assert not store.contains(old[0]) and not os.path.exists(files.path(old[0]))
    assert store.locate(chunk_id(blob(7)))[0].endswith(".seg")
    store.close()
    again = LocalStore(cfg(tmp_path))
    assert again.get(old[1]) == blob(1) and again.get(chunk_id(blob(7))) == blob(7)
    assert again.recovery == type(again.recovery)()


def test_eviction_is_lru_among_durable_only(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path, budget_bytes=5 * (1000 + HEADER)))
    ids = [store.put(blob(i)).chunk_id for i in range(5)]
    store.mark_durable(ids[:3])
    store.get(ids[0])  # 0 becomes most recently used: 1 is now the LRU
    store.put(blob(10))
    assert not store.contains(ids[1])
    assert all(store.contains(c) for c in (ids[0], ids[2], ids[3], ids[4]))
    store.put(blob(11))
    assert not store.contains(ids[2])
    assert store.stats().used_bytes <= store.budget


def test_backpressure_times_out_on_the_injected_clock(tmp_path: Path) -> None:
    clock = ManualClock()
    store = LocalStore(cfg(tmp_path, budget_bytes=2 * (1000 + HEADER)), clock=clock)
    store.put(blob(1))
    store.put(blob(2))  # full of pinned chunks, nothing evictable
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(errors, lambda: store.put(blob(3))))
    t.start()
    time.sleep(0.05)
    assert t.is_alive()  # still waiting: the clock has not moved
    clock.advance(10.0)
    t.join(2)
    assert not t.is_alive() and isinstance(errors[0], BackpressureTimeout)
    assert store.stats().chunks == 2


def test_backpressure_released_when_upload_makes_room(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path, budget_bytes=2 * (1000 + HEADER)), clock=ManualClock())
    a = store.put(blob(1)).chunk_id
    store.put(blob(2))
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(errors, lambda: store.put(blob(3))))
    t.start()
    time.sleep(0.05)
    store.mark_durable([a])  # the uploader finished: a is now evictable
    t.join(2)
    assert not t.is_alive() and not errors
    assert not store.contains(a) and store.contains(chunk_id(blob(3)))


def test_disk_free_floor_and_auto_budget(tmp_path: Path) -> None:
    free = [100_000]
    store = LocalStore(
        cfg(
            tmp_path,
            budget_bytes=None,
            auto_budget_fraction=0.5,
            min_budget_bytes=1000,
            disk_free_floor=98_000,
            max_wait=0.0,
        ),
        disk_free=lambda: free[0],
    )
    assert store.budget == 50_000
    store.put(blob(1))  # 100_000 - (1000 + HEADER) >= 98_000
    free[0] -= 1000 + HEADER
    with pytest.raises(BackpressureTimeout):
        store.put(blob(2))  # would cross the floor, nothing evictable
    floor_store = LocalStore(
        cfg(tmp_path / "b", budget_bytes=None, min_budget_bytes=7777), disk_free=lambda: 0
    )
    assert floor_store.budget == 7777


def test_enospc_becomes_backpressure_not_an_oserror(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path, max_wait=0.0))

    def full(cid: bytes, parts: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    store._segs.append = full  # type: ignore[method-assign]
    with pytest.raises(BackpressureTimeout):
        store.put(blob(1))
    assert store.stats().chunks == 0 and store._inflight == 0


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from("pug"), st.integers(0, 15)), max_size=60))
def test_eviction_never_drops_an_unuploaded_chunk(tmp_path_factory, ops) -> None:  # noqa: ANN001
    store = LocalStore(
        cfg(tmp_path_factory.mktemp("p"), budget_bytes=6 * (1000 + HEADER), max_wait=0.0)
    )
    pinned: set[bytes] = set()
    for op, i in ops:
        cid = chunk_id(blob(i))
        if op == "p":
            try:
                if store.put(blob(i)).new:
                    pinned.add(cid)
            except BackpressureTimeout:
                assert store.stats().pinned_bytes + 1000 + HEADER > store.budget
        elif op == "u":
            for c, _ in store.pending()[:2]:
                pinned.discard(c)
                store.mark_durable([c])
        elif op == "g" and store.contains(cid):
            assert store.get(cid) == blob(i)
        for c in pinned:
            assert store.contains(c) and not store.is_durable(c)
        assert store.stats().used_bytes <= store.budget
    store.close()


def _catch(errors: list[BaseException], fn) -> None:  # noqa: ANN001
    try:
        fn()
    except BaseException as e:  # noqa: BLE001
        errors.append(e)


def _open_fds_under(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if str(path) in os.path.realpath(fd))


def test_a_store_dropped_without_close_leaks_no_fds(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path))
    store.put_many([blob(i) for i in range(8)])  # opens segments
    assert _open_fds_under(tmp_path / "pool" / "segments") >= 1
    del store
    gc.collect()
    assert _open_fds_under(tmp_path / "pool") == 0

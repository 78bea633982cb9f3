"""The uploader's batched reads and unpins: the answers of one chunk at a time, fewer statements."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.unit.chunk_kit import as_chunk_file, chunk_bytes, overwrite
from tests.unit.test_pool_store import HEADER, blob, cfg
from thur import sqlbatch
from thur.cloud.index import PackIndex
from thur.cloud.pack import PackEntry
from thur.pool import ChunkCorrupt, ChunkMissing, LocalStore, chunk_id
from thur.pool.chunkfile import HEADER_V2_LEN
from thur.pool.chunkid import CHUNK_ID_LEN


@contextmanager
def statements(db: sqlite3.Connection) -> Iterator[list[str]]:
    """The SQL statements run on `db` meanwhile."""
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        db.set_trace_callback(None)


def test_read_many_matches_one_at_a_time_for_good_missing_and_corrupt(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path, budget_bytes=100_000))
    ids = [store.put(blob(i)).chunk_id for i in range(6)]
    raw = bytearray(chunk_bytes(store, ids[1]))
    raw[HEADER_V2_LEN + 10] ^= 0x40  # payload damage: the seal catches it
    overwrite(store, ids[1], bytes(raw))
    overwrite(store, ids[2], b"\1" * 8, at=-CHUNK_ID_LEN)  # a record that is not this chunk's
    store.discard(ids[3])
    gone = b"\0" * 32
    asked = [ids[0], ids[1], gone, ids[2], ids[3], ids[4], ids[0], ids[5]]
    for verify in (True, False):
        got = store.read_many(asked, verify=verify)
        assert [cid for cid, _ in got] == asked
        for cid, result in got:
            one = store.read_checked if verify else store.read_encoded
            if isinstance(result, (ChunkMissing, ChunkCorrupt)):
                with pytest.raises(type(result)):
                    one(cid)
            else:
                assert result == one(cid)
        kinds = [type(r).__name__ for _, r in got]
        bad = "ChunkCorrupt" if verify else "Encoded"  # only the seal check sees payload damage
        assert kinds == [
            "Encoded", bad, "ChunkMissing", "ChunkCorrupt", "ChunkMissing",
            "Encoded", "Encoded", "Encoded",
        ]  # fmt: skip


def test_read_many_reads_schema_1_chunk_files_too(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path))
    a, b = (store.put(blob(i)).chunk_id for i in range(2))
    as_chunk_file(store, a, chunk_bytes(store, a))
    got = dict(store.read_many([a, b], verify=True))
    assert got[a] == store.read_checked(a) and got[b] == store.read_checked(b)


def test_a_chunk_freed_while_read_many_reads_it_is_missing_never_wrong(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path))
    a, b = (store.put(blob(i)).chunk_id for i in range(2))
    read = store._segs.read

    def freed_first(cid: bytes, loc: object) -> bytes:
        if cid == a:
            store.discard(a)  # row deleted, then the bytes punched: reads a hole
        return read(cid, loc)  # type: ignore[arg-type]

    store._segs.read = freed_first  # type: ignore[method-assign]
    got = dict(store.read_many([a, b], verify=True))
    assert isinstance(got[a], ChunkMissing)
    assert got[b] == store.read_checked(b)


def test_read_many_uses_a_few_statements_per_batch_not_two_per_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlbatch, "BATCH", 7)
    store = LocalStore(cfg(tmp_path, budget_bytes=100_000))
    ids = [store.put(blob(i)).chunk_id for i in range(20)]
    with statements(store._rdb) as seen:
        got = store.read_many(ids, verify=True)
    assert [cid for cid, _ in got] == ids
    assert all(not isinstance(r, Exception) for _, r in got)
    assert len(seen) == 2 * 3  # ceil(20 / 7) lookups before the reads, as many after


def test_mark_durable_unpins_once_and_counts_bytes_once(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path))
    results = [store.put(blob(i)) for i in range(3)]
    ids = [r.chunk_id for r in results]
    assert store.stats().pinned_bytes == sum(r.stored for r in results)
    with statements(store._db) as seen:
        store.mark_durable([ids[0], ids[0], b"\0" * 32])  # a repeat and an unknown id
    assert len([s for s in seen if s.startswith("UPDATE")]) == 1  # a batch, not a row
    assert store.stats().pinned_bytes == results[1].stored + results[2].stored
    store.mark_durable(ids)  # ids[0] is durable already: not counted twice
    assert store.stats().pinned_bytes == 0
    assert all(store.is_durable(c) for c in ids)
    assert store.pending() == []


def test_index_known_is_membership_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlbatch, "BATCH", 3)
    ix = PackIndex(tmp_path / "index.sqlite")
    ids = [chunk_id(blob(i)) for i in range(10)]
    pack_a, pack_b = b"\xaa" * 32, b"\xbb" * 32
    # ids[0] is in two packs (after a repack): reported once.
    ix.add([PackEntry(c, pack_a, 0, 10, 10, 0) for c in ids[:5]])
    ix.add([PackEntry(ids[0], pack_b, 0, 10, 10, 0)])
    asked = ids[3:] + ids[:1] + ids[3:4]
    assert ix.known(asked) == set(ids[3:5]) | {ids[0]}
    assert ix.known([]) == set()
    assert all((c in ix) == (c in ix.known(ids)) for c in ids)


def test_execute_values_spans_statements_and_keeps_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlbatch, "BATCH", 7)  # 3 rows of 2 per statement
    db = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    db.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)")
    sqlbatch.execute_values(db, "INSERT INTO t {values}", [])
    rows = [(i, f"r{i}") for i in range(10)]
    with statements(db) as seen:
        sqlbatch.execute_values(db, "INSERT OR IGNORE INTO t {values}", rows + rows[:2])
    assert len(seen) == 4  # ceil(12 / 3)
    assert db.execute("SELECT a, b FROM t ORDER BY a").fetchall() == rows
    monkeypatch.setattr(sqlbatch, "BATCH", 1)  # wider rows than BATCH: one row a statement
    sqlbatch.execute_values(db, "INSERT INTO t {values}", [(20, "x"), (21, "y")])
    assert db.execute("SELECT count(*) FROM t").fetchone() == (12,)


def test_a_group_commit_inserts_its_rows_in_a_few_statements(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path, budget_bytes=1_000_000))
    with statements(store._db) as seen:
        store.put_many([blob(i) for i in range(200)])
    inserts = [s for s in seen if s.startswith("INSERT")]
    commits = store.commit_stats()[0]
    per = sqlbatch.BATCH // 6  # rows of 6 columns in one statement
    assert len(inserts) <= commits + 200 // per  # not one per row
    assert store.stats().chunks == 200 and len(store.pending()) == 200
    store.close()
    again = LocalStore(cfg(tmp_path, budget_bytes=1_000_000))
    assert all(again.get(chunk_id(blob(i))) == blob(i) for i in range(200))


def test_index_add_counts_only_new_rows(tmp_path: Path) -> None:
    ix = PackIndex(tmp_path / "index.sqlite")
    pack = b"\xaa" * 32
    entries = [PackEntry(chunk_id(blob(i)), pack, 10 * i, 10, 10, 0) for i in range(700)]
    assert ix.add(entries[:400], "index/a") == 400
    assert ix.add(entries, "index/b") == 300  # the first 400 were there already
    assert ix.known(e.chunk_id for e in entries) == {e.chunk_id for e in entries}
    assert ix.lookup(entries[699].chunk_id) == entries[699]
    assert ix.index_files_naming([pack]) == {"index/a", "index/b"}


def test_a_full_cache_evicts_a_step_in_one_commit_not_one_per_write(tmp_path: Path) -> None:
    one = 1000 + HEADER
    store = LocalStore(cfg(tmp_path, budget_bytes=64 * one))  # a step: 64 / 32 = 2 chunks more
    ids = [r.chunk_id for r in store.put_many([blob(i) for i in range(64)])]
    store.mark_durable(ids)
    with statements(store._db) as seen:
        store.put(blob(100))
    assert len([s for s in seen if s.startswith("DELETE")]) == 1
    assert store.stats().counters.evictions == 3  # what the write needs, then the step
    assert not any(store.contains(c) for c in ids[:3])  # unpinned first: least recently used
    assert all(store.contains(c) for c in ids[3:])
    for i in range(101, 103):  # the step's room: no eviction for the next two writes
        store.put(blob(i))
    assert store.stats().counters.evictions == 3
    assert store.stats().used_bytes <= store.budget


def test_an_sqlite_too_old_for_update_from_is_refused_by_name() -> None:
    sqlbatch.require_sqlite()  # this machine's
    with pytest.raises(RuntimeError, match=r"SQLite 3\.33\.0 or newer.*SQLite 3\.26\.0"):
        sqlbatch.require_sqlite((3, 26, 0))

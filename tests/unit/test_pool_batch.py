"""The batched write path: put_many / submit, group commit, and their guarantees."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from thur.cloud import LocalBackend, PackIndex, TierConfig, TieredPool
from thur.pool import (
    BackpressureTimeout,
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
from thur.pool.commit import GroupCommit

HEADER = HEADER_V2_LEN + CHUNK_ID_LEN  # bytes a chunk takes besides its payload: id + file header


def cfg(tmp: Path, **kw: object) -> PoolConfig:
    base: dict[str, object] = dict(
        data_dir=tmp / "pool",
        budget_bytes=1 << 20,
        disk_free_floor=0,
        max_wait=10.0,
        poll_interval=0.005,
        compression=CompressionPolicy(Codec.NONE),
        put_workers=4,
    )
    base.update(kw)
    return PoolConfig(**base)  # type: ignore[arg-type]


def blob(i: int, n: int = 1000) -> bytes:
    return i.to_bytes(4, "big") * (n // 4)


def test_put_many_in_order_durable_and_deduplicated(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path, compression=CompressionPolicy(Codec.ZSTD)))
    chunks = [blob(i % 7) for i in range(40)]  # duplicates inside one batch
    results = store.put_many(chunks)
    assert [r.chunk_id for r in results] == [chunk_id(c) for c in chunks]
    assert sum(r.new for r in results) == 7  # each distinct chunk stored exactly once
    assert store.stats().chunks == 7
    batches, items = store.commit_stats()
    assert items == 7 and batches <= 7
    store.close()
    again = LocalStore(cfg(tmp_path))  # every acknowledged chunk survived a reopen
    assert again.recovery.orphans_swept == 0 and not again.recovery.lost_pinned
    for c in chunks:
        assert again.get(chunk_id(c)) == c
    again.close()


def test_concurrent_puts_share_commits(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path))
    committer = store._committer
    first_commit = committer._commit_many

    def slow_leader(batch: list[object]) -> None:
        # A slow disk: the first leader's commit lasts until the other writers have
        # queued behind it (bounded), so they must share the following commits.
        deadline = time.monotonic() + 10
        while len(committer._queue) < 15 - len(batch) + 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        committer._commit_many = first_commit
        first_commit(batch)

    committer._commit_many = slow_leader  # type: ignore[method-assign]
    threads = [threading.Thread(target=store.put, args=(blob(i),)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batches, items = store.commit_stats()
    assert items == 16 and batches < 16
    assert store.stats().chunks == 16
    store.close()


@pytest.mark.parametrize("where", ["segment flush", "sqlite commit"])
def test_failed_commit_fails_every_writer_of_the_batch_and_leaves_no_trace(
    tmp_path: Path, where: str
) -> None:
    store = LocalStore(cfg(tmp_path))

    def broken(_arg: object) -> None:
        raise OSError(5, "Input/output error")

    if where == "segment flush":
        store._segs.sync = broken  # type: ignore[method-assign]
    else:
        store._committer._commit_many = broken  # type: ignore[method-assign]
    futures = [store.submit(blob(i)) for i in range(6)]
    assert all(isinstance(f.exception(), OSError) for f in futures)
    st = store.stats()
    assert st.chunks == 0 and st.used_bytes == 0 and store._inflight == 0
    # The records' bytes were given back: holes punched (whole blocks freed, the
    # ends of a block another record shares zeroed), nothing left to read.
    segments = list((store.root / "segments").iterdir())
    assert segments and not any(any(p.read_bytes()) for p in segments)
    store._segs.__dict__.pop("sync", None)  # the disk is back:
    store._committer._commit_many = store._commit_staged  # the same chunks store fine
    assert sum(r.new for r in store.put_many([blob(i) for i in range(6)])) == 6
    store.close()


def test_submit_keeps_backpressure_semantics(tmp_path: Path) -> None:
    clock = ManualClock()
    store = LocalStore(cfg(tmp_path, budget_bytes=2 * (1000 + HEADER)), clock=clock)
    store.put_many([blob(1), blob(2)])  # full of pinned chunks, nothing evictable
    fut = store.submit(blob(3))
    time.sleep(0.05)
    assert not fut.done()  # waiting for room, on the injected clock
    clock.advance(10.0)
    assert isinstance(fut.exception(timeout=2), BackpressureTimeout)
    ok = store.submit(blob(4))
    time.sleep(0.05)
    store.mark_durable([chunk_id(blob(1))])  # an upload made room
    assert ok.result(timeout=2).new
    store.close()


def test_submit_window_bounds_bytes_in_flight(tmp_path: Path) -> None:
    store = LocalStore(cfg(tmp_path, submit_window=3000, put_workers=2))
    gate = threading.Event()
    real = store._put_begin  # what the workers run

    def held_put(data: bytes, *, skip_if: object = None) -> object:
        gate.wait(5)
        return real(data)

    store._put_begin = held_put  # type: ignore[method-assign]
    submitted: list[object] = []
    producer = threading.Thread(
        target=lambda: submitted.extend(store.submit(blob(i)) for i in range(10))
    )
    producer.start()
    time.sleep(0.1)
    assert producer.is_alive() and len(submitted) == 3  # the 4th waits in submit()
    assert store._submitter.inflight <= 3000
    gate.set()
    producer.join(5)
    assert not producer.is_alive()
    store.close()  # waits for the submitted puts
    assert store._submitter.inflight == 0


def test_group_commit_batches_and_reports_errors() -> None:
    seen: list[list[int]] = []
    release = threading.Event()

    def commit_many(items: list[int]) -> None:
        seen.append(items)
        if items == [0]:
            release.wait(5)  # the first leader is slow: the rest queue behind it
        if 13 in items:
            raise ValueError("boom")

    gc: GroupCommit[int] = GroupCommit(commit_many)
    errors: dict[int, BaseException] = {}

    def run(i: int) -> None:
        try:
            gc.commit(i)
        except BaseException as e:  # noqa: BLE001
            errors[i] = e

    first = threading.Thread(target=run, args=(0,))
    first.start()
    time.sleep(0.05)
    rest = [threading.Thread(target=run, args=(i,)) for i in range(1, 20)]
    for t in rest:
        t.start()
    time.sleep(0.1)
    release.set()
    for t in [first, *rest]:
        t.join(5)
    assert sorted(i for batch in seen for i in batch) == list(range(20))
    assert len(seen) < 20
    bad = next(b for b in seen if 13 in b)
    assert set(errors) == set(bad)


def test_tier_submit_skips_chunks_the_bucket_has(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()

    def open_tier(sub: str) -> TieredPool:
        store = LocalStore(cfg(tmp_path / sub))
        return TieredPool(
            store,
            LocalBackend(tmp_path / "bucket"),
            PackIndex(tmp_path / sub / "index.sqlite"),
            TierConfig(pack_target=4096, workers=2),
        )

    a = open_tier("a")
    ids = [r.chunk_id for r in a.put_many([blob(i) for i in range(5)])]
    a.flush()
    a.close()
    b = open_tier("b")
    b.sync_index()
    results = [b.submit(blob(i)).result() for i in range(5)]
    assert [r.chunk_id for r in results] == ids and not any(r.new for r in results)
    assert b.store.stats().chunks == 0
    assert [b.get(c) for c in ids] == [blob(i) for i in range(5)]
    b.close()


@pytest.mark.parametrize("workers", [1, 3])
def test_put_workers_setting_is_honoured(tmp_path: Path, workers: int) -> None:
    store = LocalStore(cfg(tmp_path, put_workers=workers))
    names: set[str] = set()
    real = store._put_begin  # what the workers run

    def spy(data: bytes, *, skip_if: object = None) -> object:
        names.add(threading.current_thread().name)
        time.sleep(0.01)
        return real(data)

    store._put_begin = spy  # type: ignore[method-assign]
    store.put_many([blob(i) for i in range(12)])
    assert 1 <= len(names) <= workers
    store.close()


def test_a_chunk_is_invisible_until_its_batch_is_durable(tmp_path: Path) -> None:
    # Readers use a second sqlite connection and nothing in memory: a chunk
    # must not be found (by lookups, reads or a dedup put) before its
    # directory fsync and row commit are done, and must be found right after.
    store = LocalStore(cfg(tmp_path))
    committer = store._committer
    real = committer._commit_many
    seen: list[bytes] = []

    def checked(batch: list[object]) -> None:
        ids = [st.cid for st in batch]  # type: ignore[attr-defined]
        for cid in ids:
            assert not store.contains(cid)
            with pytest.raises(ChunkMissing):
                store.read_encoded(cid)
        real(batch)  # type: ignore[arg-type]
        for cid in ids:
            assert store.contains(cid)  # visible once committed, before the writer is told
        seen.extend(ids)

    committer._commit_many = checked  # type: ignore[method-assign]
    results = store.put_many([blob(i) for i in range(30)])
    assert sorted(seen) == sorted(r.chunk_id for r in results)
    store.close()


def test_memory_does_not_grow_with_the_chunks_stored(tmp_path: Path) -> None:
    # Nothing per chunk stays in memory (the index is pool.sqlite, shards are
    # bits, LRU touches a bounded buffer): 3000 more chunks, stored and read
    # back, leave the Python heap where 3000 left it (before: ~0.8 KiB each).
    import tracemalloc

    store = LocalStore(cfg(tmp_path, budget_bytes=64 << 20, put_workers=2))

    def cycle(start: int) -> None:
        for s in range(start, start + 3000, 100):
            results = store.put_many([blob(i, 64) for i in range(s, s + 100)])
            store.mark_durable([r.chunk_id for r in results])
            for r in results:
                store.get(r.chunk_id)

    cycle(0)
    store._flush_touches()  # the touch buffer is bounded (TOUCH_BATCH): start both sides empty
    pool_only = [tracemalloc.Filter(True, "*thur/pool/*")]  # not other tests' leftovers
    tracemalloc.start()
    before = tracemalloc.take_snapshot().filter_traces(pool_only)
    cycle(3000)
    store._flush_touches()
    after = tracemalloc.take_snapshot().filter_traces(pool_only)
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    tracemalloc.stop()
    assert store.stats().chunks == 6000
    assert growth < 3000 * 64  # < 64 B a chunk: noise, not a table
    store.close()

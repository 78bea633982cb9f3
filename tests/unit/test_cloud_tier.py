"""The tiered pool: upload in packs, dedup by index, ranged verified downloads."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.unit.chunk_kit import chunk_bytes, overwrite
from thur.cloud import (
    BackendPermanent,
    BackendTransient,
    LocalBackend,
    PackIndex,
    RetryPolicy,
    TierConfig,
    TieredPool,
)
from thur.cloud.pack import pack_key
from thur.pool import (
    ChunkCorrupt,
    ChunkMissing,
    Clock,
    Codec,
    CompressionPolicy,
    LocalStore,
    ManualClock,
    PoolConfig,
    SystemClock,
    chunk_id,
)


class Recording(LocalBackend):
    """The local backend, counting calls and optionally failing or stalling some."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.calls: Counter[str] = Counter()
        self.fail_puts: dict[str, list[Exception]] = {}  # key prefix -> errors to raise
        self.get_delay = 0.0

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self.calls["put:" + key.split("/")[0]] += 1
        for prefix, errors in self.fail_puts.items():
            if key.startswith(prefix) and errors:
                raise errors.pop(0)
        super().put(key, data, if_absent=if_absent)

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        self.calls["get"] += 1
        time.sleep(self.get_delay)
        return super().get(key, start, length)


def make(
    tmp: Path,
    name: str,
    backend: Recording,
    tier_config: TierConfig | None = None,
    clock: Clock | None = None,
    **pool_kw: object,
) -> TieredPool:
    kw: dict[str, object] = dict(
        data_dir=tmp / name,
        budget_bytes=1 << 20,
        disk_free_floor=0,
        fsync=False,
        max_wait=0.0,
        compression=CompressionPolicy(Codec.ZSTD),
    )
    kw.update(pool_kw)
    clock = clock or ManualClock()
    store = LocalStore(PoolConfig(**kw), clock=clock)  # type: ignore[arg-type]
    index = PackIndex(tmp / name / "index.sqlite")
    config = tier_config or TierConfig(pack_target=20_000, workers=4)
    return TieredPool(store, backend, index, config, clock=clock)


@pytest.fixture
def backend(tmp_path: Path) -> Recording:
    (tmp_path / "bucket").mkdir()
    return Recording(tmp_path / "bucket")


def chunk(i: int, n: int = 8000) -> bytes:
    return (f"chunk {i} ".encode() * n)[:n]


def test_upload_in_packs_then_evict_then_ranged_fetch(tmp_path: Path, backend: Recording) -> None:
    tier = make(tmp_path, "a", backend, compression=CompressionPolicy(Codec.NONE))
    ids = [tier.put(chunk(i)).chunk_id for i in range(10)]
    report = tier.flush()
    # 10 x 8 KiB raw chunks, 20 KB packs: 2 chunks per pack, one index file for all.
    assert (report.packs, report.chunks, report.index_files) == (5, 10, 1)
    assert backend.calls["put:packs"] == 5 and backend.calls["put:index"] == 1
    assert tier.store.stats().pinned_bytes == 0
    for cid in ids:
        tier.store.discard(cid)  # as eviction would
    assert tier.get(ids[3]) == chunk(3)
    assert backend.calls["get"] == 1  # one ranged GET, not the whole pack
    assert tier.store.is_durable(ids[3])  # verified and cached as durable
    assert tier.get(ids[3]) == chunk(3) and backend.calls["get"] == 1
    assert tier.flush().packs == 0  # nothing pending: nothing uploaded again
    tier.close()


def test_dedup_across_machines_sharing_a_bucket(tmp_path: Path, backend: Recording) -> None:
    a = make(tmp_path, "a", backend)
    ids = [a.put(chunk(i)).chunk_id for i in range(4)]
    a.flush()
    b = make(tmp_path, "b", backend)
    assert b.sync_index().index_files_loaded >= 1
    puts = backend.calls["put:packs"]
    assert not b.put(chunk(0)).new  # known to the index: not stored, not uploaded
    assert b.put(chunk(99)).new
    assert b.flush().chunks == 1 and backend.calls["put:packs"] == puts + 1
    assert [b.get(c) for c in ids] == [chunk(i) for i in range(4)]
    a.close()
    b.close()


def test_pinned_chunk_already_in_index_is_not_uploaded_again(
    tmp_path: Path, backend: Recording
) -> None:
    # A crash after the index commit but before mark_durable leaves this state.
    a = make(tmp_path, "a", backend)
    cid = a.put(chunk(1)).chunk_id
    b = make(tmp_path, "b", backend)
    b.put(chunk(1))
    b.flush()
    a.sync_index()
    report = a.flush()
    assert (report.packs, report.already_indexed) == (0, 1)
    assert a.store.is_durable(cid)


def test_single_flight_download(tmp_path: Path, backend: Recording) -> None:
    tier = make(tmp_path, "a", backend)
    cid = tier.put(chunk(7)).chunk_id
    tier.flush()
    tier.store.discard(cid)
    backend.calls.clear()
    backend.get_delay = 0.2
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(tier.get(cid))) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [chunk(7)] * 5 and backend.calls["get"] == 1


def test_prefetch_reads_ahead_in_the_background(tmp_path: Path, backend: Recording) -> None:
    """Read-ahead: prefetched chunks arrive without a reader waiting, each fetched once,
    and a later get() is served from the local cache."""
    tier = make(tmp_path, "a", backend)
    ids = [tier.put(chunk(i)).chunk_id for i in range(4)]
    tier.flush()
    for cid in ids:
        tier.store.discard(cid)
    backend.calls.clear()
    tier.prefetch(ids)
    tier.prefetch(ids)  # a second read-ahead of the same chunks is not a second GET
    deadline = time.monotonic() + 10
    while not all(tier.store.contains(c) for c in ids):
        assert time.monotonic() < deadline, "prefetch did not bring the chunks in"
        time.sleep(0.01)
    fetched = backend.calls["get"]
    assert 1 <= fetched <= len(ids)
    assert [tier.get(c) for c in ids] == [chunk(i) for i in range(4)]
    assert backend.calls["get"] == fetched


def test_corrupt_cache_copy_is_refetched_if_durable(tmp_path: Path, backend: Recording) -> None:
    tier = make(tmp_path, "a", backend)
    durable = tier.put(chunk(1)).chunk_id
    tier.flush()
    pinned = tier.put(chunk(2)).chunk_id
    for cid in (durable, pinned):
        overwrite(tier.store, cid, b"!!!", at=len(chunk_bytes(tier.store, cid)) - 3)
    assert tier.get(durable) == chunk(1)  # healed from the backend
    with pytest.raises(ChunkCorrupt):
        tier.get(pinned)  # the only copy is bad: typed error, never wrong bytes
    report = tier.flush()  # and the bad copy is never made durable
    assert report.corrupt == [pinned] and report.packs == 0
    assert not tier.store.is_durable(pinned)


def test_tampered_pack_fails_download_verification(tmp_path: Path, backend: Recording) -> None:
    tier = make(tmp_path, "a", backend, compression=CompressionPolicy(Codec.NONE))
    cid = tier.put(chunk(5)).chunk_id
    tier.flush()
    tier.store.discard(cid)
    entry = tier.index.lookup(cid)
    assert entry is not None
    path = backend.root / pack_key(entry.pack_id)
    raw = bytearray(path.read_bytes())
    raw[entry.offset + 100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ChunkCorrupt):
        tier.get(cid)
    assert not tier.store.contains(cid)  # nothing unverified entered the pool
    with pytest.raises(ChunkMissing):
        tier.get(chunk_id(b"never written"))


def test_transient_upload_errors_are_retried_with_backoff(
    tmp_path: Path, backend: Recording
) -> None:
    tier = make(tmp_path, "a", backend)
    backend.fail_puts["packs/"] = [BackendTransient("503 SlowDown")] * 3
    backend.fail_puts["index/"] = [BackendTransient("connection reset")]
    tier.put(chunk(1))
    report = tier.flush()
    assert report.chunks == 1
    assert tier.clock.sleeps == [1.0, 2.0, 4.0, 1.0]  # type: ignore[attr-defined]


def test_permanent_error_fails_fast_and_keeps_chunks_pinned(
    tmp_path: Path, backend: Recording
) -> None:
    tier = make(tmp_path, "a", backend)
    cid = tier.put(chunk(1)).chunk_id
    backend.fail_puts["index/"] = [BackendPermanent("403 AccessDenied")]
    with pytest.raises(BackendPermanent):
        tier.flush()
    # Write order: the pack went up, the index did not, so nothing is durable.
    assert backend.calls["put:packs"] == 1 and not tier.store.is_durable(cid)
    assert cid not in tier.index
    # The pack without an index file is found again from the listing.
    fresh = make(tmp_path, "b", backend)
    assert fresh.sync_index().packs_scanned == 1 and cid in fresh.index
    tier.flush()  # the retry succeeds
    assert tier.store.is_durable(cid)


def test_background_uploader_relieves_backpressure(tmp_path: Path, backend: Recording) -> None:
    # A 4-chunk cache: the writer can only finish if the uploader frees room.
    config = TierConfig(
        pack_target=20_000, workers=2, idle_flush=0.05, retry=RetryPolicy(initial=0.01)
    )
    tier = make(
        tmp_path,
        "a",
        backend,
        config,
        SystemClock(),
        budget_bytes=4 * 1100,
        max_wait=5.0,
        poll_interval=0.01,
        compression=CompressionPolicy(Codec.NONE),
    )
    tier.start()
    ids = [tier.put(chunk(i, 1000)).chunk_id for i in range(20)]
    tier.close()
    assert [tier.get(c) for c in ids] == [chunk(i, 1000) for i in range(20)]
    assert tier.store.stats().used_bytes <= 4 * 1100

"""TieredPool end to end over each backend kind: ingest, flush, lose the disk, read back.

The bucket is the source of truth: a machine with an empty data_dir rebuilds
its index from the bucket (index files, or the packs' own chunk tables when
no index file is left) and reads every chunk back, verified.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest

from thur.cloud import Backend, BucketMissing, PackIndex, RetryPolicy, TierConfig, TieredPool
from thur.pool import (
    ChunkerParams,
    Clock,
    Codec,
    CompressionPolicy,
    LocalStore,
    PoolConfig,
    StreamChunker,
    SystemClock,
)

from .conftest import Target

KiB = 1024
MiB = 1024 * KiB
SMALL_CHUNKS = ChunkerParams(min_size=16 * KiB, avg_size=32 * KiB, max_size=128 * KiB)
# The real schedule is 1 s → 30 s over 10 attempts; tests keep its shape, not its length.
FAST_RETRY = RetryPolicy(attempts=40, initial=0.05, cap=0.5)


def backup_like_stream(seed: int, size: int) -> bytes:
    """Incompressible runs, text-like runs, and a repeated block (dedup)."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 9)).hex().encode() for _ in range(300)]
    repeated = rng.randbytes(200 * KiB)
    parts: list[bytes] = []
    total = 0
    while total < size:
        kind = rng.random()
        if kind < 0.4:
            part = rng.randbytes(rng.randint(20 * KiB, 150 * KiB))
        elif kind < 0.8:
            part = b" ".join(rng.choice(words) for _ in range(rng.randint(3000, 20000)))
        else:
            part = repeated
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


def open_tier(
    data_dir: Path, backend: Backend, clock: Clock | None = None, **config: object
) -> TieredPool:
    clock = clock or SystemClock()
    store = LocalStore(
        PoolConfig(
            data_dir,
            budget_bytes=256 * MiB,
            disk_free_floor=0,
            fsync=False,
            max_wait=5.0,
            compression=CompressionPolicy(Codec.ZSTD),
        ),
        clock=clock,
    )
    kw: dict[str, object] = dict(pack_target=256 * KiB, workers=4, retry=FAST_RETRY)
    kw.update(config)
    return TieredPool(
        store, backend, PackIndex(data_dir / "index.sqlite"), TierConfig(**kw), clock=clock
    )  # type: ignore[arg-type]


def ingest(tier: TieredPool, data: bytes, record: int = 64 * KiB) -> list[bytes]:
    chunker = StreamChunker(SMALL_CHUNKS)
    ids: list[bytes] = []
    for off in range(0, len(data), record):
        ids += [tier.put(c).chunk_id for c in chunker.feed(data[off : off + record])]
    ids += [tier.put(c).chunk_id for c in chunker.finish()]
    return ids


def read_all(tier: TieredPool, ids: list[bytes]) -> bytes:
    return b"".join(tier.get(cid) for cid in ids)


def test_ingest_flush_lose_the_disk_and_restore_from_the_bucket(
    target: Target, tmp_path: Path
) -> None:
    data = backup_like_stream(seed=3, size=3 * MiB)
    backend = target.backend()

    tier = open_tier(tmp_path / "a", backend)
    ids = ingest(tier, data)
    report = tier.flush()
    assert report.chunks == len(set(ids)) and report.packs >= 4
    assert tier.store.stats().pinned_bytes == 0  # every chunk durable
    assert read_all(tier, ids) == data
    tier.close()
    packs = {o.key for o in backend.list("packs/")}
    assert len(packs) == report.packs
    assert list(backend.list("index/"))

    # A new machine: empty data_dir, the bucket's index files.
    shutil.rmtree(tmp_path / "a")
    fresh = open_tier(tmp_path / "b", target.backend())
    sync = fresh.sync_index()
    assert sync.entries_added == len(set(ids)) and sync.packs_scanned == 0
    assert fresh.store.stats().chunks == 0
    assert read_all(fresh, ids) == data  # ranged GETs, each verified
    # Writing the same data again uploads nothing: the index knows every chunk.
    assert all(not r.new for r in (fresh.put(c) for c in _chunks(data)))
    assert fresh.flush().packs == 0
    fresh.close()

    # The bucket listing alone: no index file left, only self-describing packs.
    for info in list(backend.list("index/")):
        backend.delete(info.key)
    bare = open_tier(tmp_path / "c", target.backend())
    sync = bare.sync_index()
    assert sync.packs_scanned == len(packs) and sync.entries_added == len(set(ids))
    assert read_all(bare, ids) == data
    bare.close()
    assert {o.key for o in backend.list("packs/")} == packs  # nothing uploaded twice


def _chunks(data: bytes) -> list[bytes]:
    chunker = StreamChunker(SMALL_CHUNKS)
    return chunker.feed(data) + chunker.finish()


def test_two_machines_share_a_bucket(target: Target, tmp_path: Path) -> None:
    """Dedup across machines is by the bucket's index: the second uploads only what is new."""
    common = backup_like_stream(seed=5, size=1 * MiB)
    own = backup_like_stream(seed=6, size=512 * KiB)
    a = open_tier(tmp_path / "a", target.backend())
    ids_a = ingest(a, common)
    a.flush()
    a.close()

    b = open_tier(tmp_path / "b", target.backend())
    b.sync_index()
    ids_b = ingest(b, common + own)
    report = b.flush()
    shared = set(ids_a) & set(ids_b)
    assert shared and report.chunks == len(set(ids_b) - set(ids_a))
    b.close()

    c = open_tier(tmp_path / "c", target.backend())
    c.sync_index()
    assert read_all(c, ids_a) == common and read_all(c, ids_b) == common + own
    c.close()


class NoSleep:
    """A clock whose sleep fails the test: a permanent error must not be retried."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s: a permanent error was retried")


def test_flush_into_a_missing_bucket_fails_at_once_and_keeps_the_data(
    cloud_target: Target, tmp_path: Path
) -> None:
    _, make = cloud_target.missing_bucket()
    tier = open_tier(tmp_path / "a", make(), clock=NoSleep())  # retries sleep on it
    data = backup_like_stream(seed=7, size=512 * KiB)
    ids = ingest(tier, data)
    pinned = tier.store.stats().pinned_bytes
    with pytest.raises(BucketMissing, match="does not exist"):
        tier.flush()
    assert tier.store.stats().pinned_bytes == pinned  # nothing lost, nothing evictable
    assert read_all(tier, ids) == data
    tier.close()

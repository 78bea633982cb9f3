"""Shared builders for the cartridge tests: a tiered pool over a local bucket in tmp_path."""

from __future__ import annotations

from pathlib import Path

from thur.cloud import LocalBackend, PackIndex, RetryPolicy, TierConfig, TieredPool
from thur.pool import ChunkerParams, LocalStore, PoolConfig
from thur.tape.store import CartridgeStore

KiB = 1024
# Small chunks so that kilobytes of records span many chunks (fast tests).
SMALL_CHUNKS = ChunkerParams(min_size=4 * KiB, avg_size=16 * KiB, max_size=64 * KiB)


def make_tier(tmp_path: Path, *, fsync: bool = False) -> TieredPool:
    (tmp_path / "bucket").mkdir(exist_ok=True)
    (tmp_path / "pool").mkdir(exist_ok=True)
    store = LocalStore(
        PoolConfig(
            tmp_path / "pool",
            budget_bytes=4 << 30,
            min_budget_bytes=0,
            disk_free_floor=0,
            fsync=fsync,
        )
    )
    backend = LocalBackend(tmp_path / "bucket", fsync=fsync)
    config = TierConfig(workers=2, retry=RetryPolicy(attempts=1))
    return TieredPool(store, backend, PackIndex(tmp_path / "pool" / "index.sqlite"), config)


def make_store(
    tmp_path: Path,
    *,
    chunker: ChunkerParams | None = SMALL_CHUNKS,
    tier: TieredPool | None = None,
    **kwargs: object,
) -> CartridgeStore:
    tier = tier or make_tier(tmp_path)
    return CartridgeStore(tmp_path / "tapes", tier, chunker=chunker, **kwargs)  # type: ignore[arg-type]

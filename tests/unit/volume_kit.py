"""Shared builders for the volume tests: a tiered pool over a local bucket in tmp_path."""

from __future__ import annotations

from pathlib import Path

from tests.unit.tape_kit import make_tier
from thur.cloud import TieredPool
from thur.volume import VolumeConfig, VolumeStore

KiB = 1024
# Small pages and blocks so that a few kilobytes span many pages (fast tests).
SMALL = {"block_size": 512, "page_size": 2 * KiB}


def make_volumes(
    tmp_path: Path,
    *,
    tier: TieredPool | None = None,
    cache_bytes: int = 16 * KiB,
    background: bool = False,
    fsync: bool = False,
    replicate_delay: float = 60.0,
    journal_bytes: int = VolumeConfig().journal_bytes,
) -> VolumeStore:
    tier = tier or make_tier(tmp_path)
    config = VolumeConfig(
        cache_bytes=cache_bytes, background=background, fsync=fsync, journal_bytes=journal_bytes
    )
    return VolumeStore(tmp_path / "volumes", tier, config=config, replicate_delay=replicate_delay)


def chunk_count(tier: TieredPool) -> int:
    return tier.store.stats().chunks

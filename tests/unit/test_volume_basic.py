"""PoolVolume: thin provisioning, GET LBA STATUS, shrink, XCOPY sharing, errors."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.unit.tape_kit import make_tier
from tests.unit.volume_kit import SMALL, chunk_count, make_volumes
from thur.pool import BackpressureTimeout
from thur.volume import (
    Backpressure,
    InvalidVolumeName,
    LunInUse,
    MediumCorrupt,
    OutOfRange,
    ShrinkRefused,
    VolumeConfig,
    VolumeExists,
    VolumeStore,
    WriteProtected,
)
from thur.volume.table import ENTRY_SIZE

KiB, MiB = 1024, 1 << 20


def test_unmapped_reads_zeros_and_zero_pages_are_not_stored(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    store = make_volumes(tmp_path, tier=tier)
    vol = store.create("z", 1 << 40)  # 1 TiB, 4 KiB blocks, 64 KiB pages
    assert vol.read(vol.num_blocks - 16, 16) == bytes(16 * 4096)
    before = chunk_count(tier)
    vol.write(0, bytes(64 * KiB))  # a whole page of zeros
    vol.write(20, b"\1" * 4096)
    vol.flush()
    assert chunk_count(tier) == before + 1
    assert vol.is_mapped(0, 32) == [(0, 16, False), (16, 16, True)]
    assert vol.table.allocated_bytes() <= 8 * KiB  # sparse: one file block of entries
    store.shutdown(replicate=False)


def test_lba_status_runs_are_page_granular_and_cover_the_range(tmp_path: Path) -> None:
    store = make_volumes(tmp_path)
    vol = store.create("s", 64 * KiB, **SMALL)  # 128 blocks, 4 per page
    vol.write(5, b"a" * 512)  # page 1
    vol.write(8, b"b" * 1024)  # page 2
    vol.write(20, b"c" * 512)  # page 5
    assert vol.is_mapped(0, 128) == [(0, 4, False), (4, 8, True), (12, 8, False),
                                     (20, 4, True), (24, 104, False)]  # fmt: skip
    assert vol.is_mapped(6, 3) == [(6, 3, True)]  # starts mid-page: clipped to the range
    vol.flush()
    vol.unmap(4, 4)
    assert vol.is_mapped(0, 12) == [(0, 8, False), (8, 4, True)]
    vol.unmap(9, 1)  # part of a page: zero-filled, still mapped
    assert vol.read(8, 2) == b"b" * 512 + bytes(512)
    assert vol.is_mapped(8, 4) == [(8, 4, True)]
    vol.write_zeroes(8, 4, unmap=False)  # a whole page of zeros is deallocated either way
    assert vol.is_mapped(0, 128) == [(0, 20, False), (20, 4, True), (24, 104, False)]
    with pytest.raises(OutOfRange):
        vol.is_mapped(100, 29)
    store.shutdown(replicate=False)


def test_shrink_refused_over_data_and_grow_shows_zeros(tmp_path: Path) -> None:
    store = make_volumes(tmp_path)
    vol = store.create("r", 64 * KiB, **SMALL)
    vol.write(100, b"x" * 512)  # page 25
    with pytest.raises(ShrinkRefused):
        vol.resize(64)  # page 25 lies wholly beyond
    with pytest.raises(ShrinkRefused):
        vol.resize(99)  # page 24 straddles; its tail (block 100) holds data
    vol.write(101, b"y" * 512)  # still dirty in the cache: refused all the same
    with pytest.raises(ShrinkRefused):
        vol.resize(98)
    vol.unmap(100, 4)
    vol.write(97, b"k" * 512)
    vol.resize(98)  # the straddling page keeps block 97; its tail is zeros
    assert vol.num_blocks == 98
    with pytest.raises(OutOfRange):
        vol.read(98, 1)
    vol.resize(200)
    assert vol.read(96, 8) == bytes(512) + b"k" * 512 + bytes(6 * 512)
    store.close("r")
    assert store.open("r").num_blocks == 200  # the manifest is committed at once
    store.shutdown(replicate=False)


def test_xcopy_shares_aligned_pages_without_storing_chunks(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    store = make_volumes(tmp_path, tier=tier, cache_bytes=256 * KiB)
    src = store.create("src", 1 * MiB, **SMALL)
    dst = store.create("dst", 1 * MiB, **SMALL)
    data = random.Random(1).randbytes(256 * KiB)
    src.write(0, data)
    src.flush()
    before = chunk_count(tier)
    # 2 blocks before a page boundary on both sides: edges of 2 blocks, pages shared.
    dst.copy_from(src, 2, 1026, 400)
    dst.flush()
    assert dst.read(1026, 400) == data[1024 : 1024 + 400 * 512]
    new = chunk_count(tier) - before
    assert new <= 2  # only the two partial edge pages are new content
    assert sum(1 for _ in dst.chunk_ids()) == 101  # 99 shared pages + 2 edge pages
    # Unaligned relative offsets cannot share: read+write, still correct.
    dst.copy_from(src, 1, 0, 9)
    assert dst.read(0, 9) == data[512 : 10 * 512]
    store.shutdown(replicate=False)


def test_compare_and_write(tmp_path: Path) -> None:
    store = make_volumes(tmp_path)
    vol = store.create("c", 64 * KiB, **SMALL)
    vol.write(3, b"A" * 1024)
    assert vol.compare_and_write(3, b"A" * 1024, b"B" * 1024) is None
    assert vol.read(3, 2) == b"B" * 1024
    wrong = b"B" * 700 + b"?" + b"B" * 323
    assert vol.compare_and_write(3, wrong, b"C" * 1024) == 700
    assert vol.read(3, 2) == b"B" * 1024  # nothing written
    store.shutdown(replicate=False)


def test_errors_and_flags(tmp_path: Path) -> None:
    store = make_volumes(tmp_path)
    vol = store.create("e", 64 * KiB, **SMALL)
    with pytest.raises(OutOfRange):
        vol.write(127, b"x" * 1024)
    with pytest.raises(OutOfRange):
        vol.read(-1, 1)
    with pytest.raises(ValueError):
        vol.write(0, b"short")
    vol.set_flags(write_protected=True)
    with pytest.raises(WriteProtected):
        vol.write(0, b"x" * 512)
    with pytest.raises(WriteProtected):
        vol.unmap(0, 4)
    serial = vol.serial
    store.close("e")
    again = store.open("e")
    assert again.write_protected and again.serial == serial and len(serial) == 32
    for bad in ("", ".hidden", "a/b", "x" * 64, "sp ace"):
        with pytest.raises(InvalidVolumeName):
            store.create(bad, 4096)
    with pytest.raises(VolumeExists):
        store.create("e", 4096)
    assert store.create("f", 4096).lun == 1
    with pytest.raises(LunInUse):
        store.create("g", 4096, lun=1)
    assert store.create("g", 4096, lun=7).lun == 7
    assert store.list() == ["e", "f", "g"]
    store.shutdown(replicate=False)


def test_a_damaged_entry_is_medium_corrupt_never_garbage(tmp_path: Path) -> None:
    store = make_volumes(tmp_path)
    vol = store.create("d", 64 * KiB, **SMALL)
    vol.write(4, b"q" * 2048)
    vol.flush()
    store.close("d")
    table = tmp_path / "volumes" / "d" / "pages.table"
    with open(table, "r+b") as f:
        f.seek(ENTRY_SIZE * 1 + 3)
        f.write(b"\xff")
    vol = store.open("d")
    assert vol.read(0, 4) == bytes(2048)
    with pytest.raises(MediumCorrupt):
        vol.read(4, 1)
    store.shutdown(replicate=False)


def test_backpressure_reaches_the_writer_and_loses_nothing(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    store = make_volumes(tmp_path, tier=tier, cache_bytes=8 * KiB)
    vol = store.create("b", 64 * KiB, **SMALL)
    vol.write(0, b"1" * 8192)  # fills the cache with four dirty pages

    def full(chunks: object) -> list[object]:
        raise BackpressureTimeout(2048, 0.0)

    real = tier.put_many
    tier.put_many = full  # type: ignore[method-assign]
    with pytest.raises(Backpressure):
        vol.write(40, b"2" * 512)  # needs a write-back to make room
    with pytest.raises(Backpressure):
        vol.flush()
    tier.put_many = real  # type: ignore[method-assign]
    vol.write(40, b"2" * 512)
    vol.flush()
    assert vol.read(0, 16) == b"1" * 8192 and vol.read(40, 1) == b"2" * 512
    store.shutdown(replicate=False)


def test_background_writeback_bounds_dirty_pages(tmp_path: Path) -> None:
    tier = make_tier(tmp_path)
    config = VolumeConfig(cache_bytes=64 * KiB, writeback_interval=0.01, fsync=False)
    store = VolumeStore(tmp_path / "volumes", tier, config=config)
    vol = store.create("w", 1 * MiB, **SMALL)
    for i in range(40):
        vol.write(i * 4, os.urandom(2048))
    for _ in range(200):  # the background writer brings dirty pages under the high mark
        if vol.cache.dirty_bytes <= 32 * KiB:
            break
        time.sleep(0.01)
    assert vol.cache.dirty_bytes <= 32 * KiB
    assert vol.cache.bytes <= 64 * KiB
    store.shutdown(replicate=False)

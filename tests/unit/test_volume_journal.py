"""The write journal: records round-trip, a torn tail ends replay, epochs rotate,
and a volume abandoned without a fence (what kill -9 leaves) keeps every
acknowledged command."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.tape_kit import make_tier
from tests.unit.volume_kit import SMALL, make_volumes
from thur.cloud import GarbageCollector, GcConfig
from thur.pool import ChunkMissing
from thur.volume import VolumeConfig, VolumeStore
from thur.volume.journal import HEADER, SET, WRITE, ZERO, Journal

PS = SMALL["page_size"]
BS = SMALL["block_size"]


def journals(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("journal."))


def test_records_round_trip_and_survive_reopen(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.write(4096, b"a" * 1000)
    j.zero(0, 512)
    j.set(7, [b"\x01" * 32, None])
    j.close()
    j = Journal(tmp_path)
    recs = list(j.records())
    assert [(r.kind, r.a, r.b) for r in recs] == [(WRITE, 4096, 1000), (ZERO, 0, 512), (SET, 7, 2)]
    assert recs[0].payload == b"a" * 1000
    assert recs[2].ids() == [b"\x01" * 32, None]
    j.close()


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=3 * (HEADER.size + 100)), flip=st.booleans())
def test_a_torn_or_damaged_tail_ends_replay_at_the_last_whole_record(
    tmp_path_factory: object, cut: int, flip: bool
) -> None:
    path = tmp_path_factory.mktemp("j")  # type: ignore[attr-defined]
    j = Journal(path)
    for i in range(3):
        j.write(i * 100, bytes([i + 1]) * 100)
    j.close()
    f = path / "journal.1"
    raw = bytearray(f.read_bytes()[:cut])
    if flip and raw:
        raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    whole = len(raw) // (HEADER.size + 100)
    if flip and len(raw) % (HEADER.size + 100) == 0 and raw:
        whole -= 1  # the flipped byte is inside the last whole record
    j = Journal(path)
    assert [r.a for r in j.records()] == [i * 100 for i in range(whole)]
    j.close()


def test_rotation_starts_an_empty_epoch_and_drops_every_older_one(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.write(0, b"x" * 10)
    j.retire()  # a checkpoint began: the old file is kept, replayed first
    j.write(0, b"y" * 10)
    assert journals(tmp_path) == ["journal.1", "journal.2"]
    assert [r.payload for r in j.records()] == [b"x" * 10, b"y" * 10]
    j.rotate()  # a full fence: everything is in the table
    assert journals(tmp_path) == ["journal.3"]
    assert list(j.records()) == []
    j.close()


def test_an_interrupted_checkpoint_replays_the_retired_files_first(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.write(0, b"x" * 10)
    j.retire()
    j.write(10, b"y" * 10)
    j.close()
    j = Journal(tmp_path)
    assert [(r.a, r.payload) for r in j.records()] == [(0, b"x" * 10), (10, b"y" * 10)]
    j.drop_retired()
    assert journals(tmp_path) == ["journal.2"]
    j.close()


def test_a_torn_retired_file_ends_the_replay_there(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.write(0, b"x" * 10)
    j.write(10, b"z" * 10)
    j.retire()
    j.write(20, b"y" * 10)
    j.close()
    f = tmp_path / "journal.1"
    f.write_bytes(f.read_bytes()[:-1])
    j = Journal(tmp_path)
    assert [r.a for r in j.records()] == [0]  # history must stay contiguous
    j.close()


def test_a_record_of_another_epoch_is_not_replayed(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.write(0, b"x" * 10)
    j.close()
    os.rename(tmp_path / "journal.1", tmp_path / "journal.5")
    j = Journal(tmp_path)
    assert list(j.records()) == []
    j.close()


def reopen(tmp_path: Path, store: VolumeStore) -> VolumeStore:
    """What kill -9 leaves: nothing written back, nothing fenced, then a fresh start."""
    for vol in list(store._open.values()):  # noqa: SLF001 - the crash under test
        vol.abandon()
    return make_volumes(tmp_path, tier=make_tier(tmp_path))


def test_unfenced_writes_zeroes_and_copies_survive_abandon(tmp_path: Path) -> None:
    store = make_volumes(tmp_path, cache_bytes=64 * 1024)
    store.create("a", 32 * PS, **SMALL)
    store.create("b", 32 * PS, **SMALL)
    a, b = store.open("a"), store.open("b")
    a.write(0, b"\x11" * (8 * PS))  # whole pages
    a.flush()
    a.write(1, b"\x22" * BS)  # a sub-page write after the fence
    a.write_zeroes(2 * (PS // BS), PS // BS, unmap=True)  # a whole page unmapped
    a.write_zeroes(3 * (PS // BS) + 1, 1, unmap=False)  # a partial zero fill
    b.copy_from(a, 4 * (PS // BS), 0, 4 * (PS // BS))  # shared pages, not flushed
    expect_a = a.read(0, 32 * PS // BS)
    expect_b = b.read(0, 32 * PS // BS)
    store = reopen(tmp_path, store)
    a, b = store.open("a"), store.open("b")
    assert a.read(0, 32 * PS // BS) == expect_a
    assert b.read(0, 32 * PS // BS) == expect_b
    assert a.is_mapped(2 * (PS // BS), PS // BS) == [(2 * (PS // BS), PS // BS, False)]
    assert journals(a.path) == ["journal.3"]  # flush -> 2; replayed, fenced -> 3
    store.shutdown(replicate=False)


def test_an_unmap_after_a_write_is_not_undone_by_replay(tmp_path: Path) -> None:
    store = make_volumes(tmp_path)
    store.create("a", 8 * PS, **SMALL)
    a = store.open("a")
    a.write(0, b"\x33" * PS)
    a.unmap(0, PS // BS)
    store = reopen(tmp_path, store)
    assert store.open("a").read(0, PS // BS) == bytes(PS)
    store.shutdown(replicate=False)


def _journal_bytes(volume_dir: Path) -> int:
    """Bytes of the journal files; one retired by the background checkpoint meanwhile is 0."""
    total = 0
    for name in os.listdir(volume_dir):
        if name.startswith("journal."):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(volume_dir / name).st_size
    return total


@pytest.mark.parametrize("background", [False, True])
def test_the_journal_stays_within_its_bound(tmp_path: Path, background: bool) -> None:
    """Without a background writer a writer fences at the bound; with one, the
    background checkpoints and a writer fences only at twice the bound."""
    config = VolumeConfig(cache_bytes=64 * 1024, background=background, fsync=False,
                          journal_bytes=32 * 1024, writeback_interval=0.01)
    store = VolumeStore(tmp_path / "volumes", make_tier(tmp_path), config=config)
    store.create("a", 256 * PS, **SMALL)
    a = store.open("a")
    for i in range(200):
        a.write(i * (PS // BS), bytes([i % 251 + 1]) * PS)
        size = _journal_bytes(a.path)
        assert size <= (2 if background else 1) * 32 * 1024 + 2 * (HEADER.size + PS)
    store = reopen(tmp_path, store)
    a = store.open("a")
    for i in range(200):
        assert a.read(i * (PS // BS), PS // BS) == bytes([i % 251 + 1]) * PS
    store.shutdown(replicate=False)


def test_a_clean_close_leaves_an_empty_journal(tmp_path: Path) -> None:
    store = make_volumes(tmp_path)
    store.create("a", 8 * PS, **SMALL)
    a = store.open("a")
    a.write(0, b"\x44" * PS)
    path = a.path
    store.shutdown(replicate=False)
    assert [(path / n).stat().st_size for n in journals(path)] == [0]


def test_a_background_checkpoint_drops_the_retired_files(tmp_path: Path) -> None:
    config = VolumeConfig(cache_bytes=64 * 1024, background=True, fsync=False,
                          journal_bytes=16 * 1024, writeback_interval=0.01)
    store = VolumeStore(tmp_path / "volumes", make_tier(tmp_path), config=config)
    store.create("a", 64 * PS, **SMALL)
    a = store.open("a")
    for i in range(20):
        a.write(i * (PS // BS), bytes([i + 1]) * PS)
    deadline = time.monotonic() + 30
    while len(journals(a.path)) > 1 or a._journal.end > 16 * 1024:  # noqa: SLF001
        assert time.monotonic() < deadline, journals(a.path)
        a.write(0, b"\x01" * BS)  # keep the writer going: the bound is crossed again
        time.sleep(0.01)
    assert a._journal.epoch > 1  # noqa: SLF001 - at least one checkpoint happened
    store = reopen(tmp_path, store)
    a = store.open("a")
    assert a.read(PS // BS, PS // BS) == bytes([2]) * PS
    assert a.read(0, 1) == b"\x01" * BS
    store.shutdown(replicate=False)


def test_replay_passes_a_chunk_a_later_record_replaced_and_gc_swept(tmp_path: Path) -> None:
    """SET p -> X, a partial write on X, a full FUA write (the entry moves to Y), X's
    last reference goes and GC sweeps it; then a crash: replay must not fail on X."""
    tier = make_tier(tmp_path)
    store = make_volumes(tmp_path, tier=tier)
    store.create("a", 8 * PS, **SMALL)
    store.create("b", 8 * PS, **SMALL)
    a, b = store.open("a"), store.open("b")
    x = os.urandom(PS)
    a.write(0, x)
    a.flush()
    b.copy_from(a, 0, 0, PS // BS)  # SET b.0 -> X
    b.write(1, b"\x55" * BS)  # read-modify-write of X
    y = os.urandom(PS)
    b.write(0, y, fua=True)  # b's entry now names Y; the journal still holds all three
    a.write(0, os.urandom(PS))
    a.flush()  # X's last reference gone
    tier.flush()
    GarbageCollector(tier, store.owners, GcConfig(grace=0, repack_below=0.99)).run()
    with pytest.raises(ChunkMissing):
        tier.get(blake3.blake3(x).digest())
    store = reopen(tmp_path, store)
    assert store.open("b").read(0, PS // BS) == y
    store.shutdown(replicate=False)

"""Chunk identity, FastCDC stream chunking and fixed-size chunking."""

from __future__ import annotations

import os
import random

import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from thur.fsutil import UNLOCKED_COPY_MIN
from thur.pool import ChunkerParams, FixedChunker, StreamChunker, chunk_id, parse_chunk_id

SMALL = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)


def _data(seed: int, n: int) -> bytes:
    # Low-entropy-ish data with repeats so cut points are not all max-size.
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randint(1, 40)) for _ in range(50)]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words)
    return bytes(out[:n])


def _feed(params: ChunkerParams, data: bytes, sizes: list[int]) -> list[bytes]:
    ch = StreamChunker(params)
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)] if sizes else len(data)
        out += ch.feed(data[pos : pos + n])
        pos += n
        i += 1
    return out + ch.finish()


def test_chunk_id_is_blake3_256_threaded_or_not() -> None:
    small, big = b"abc", bytes(range(256)) * 8192  # 2 MiB: the threaded path
    assert chunk_id(small) == blake3(small).digest()
    assert chunk_id(big) == blake3(big).digest()
    assert len(chunk_id(b"")) == 32
    assert parse_chunk_id(chunk_id(small).hex()) == chunk_id(small)
    with pytest.raises(ValueError):
        parse_chunk_id("abcd")


def test_default_params_are_the_tape_ones() -> None:
    p = ChunkerParams()
    # 128 KiB / 512 KiB / 2 MiB: why, in ChunkerParams' docstring and PERFORMANCE.md.
    assert (p.min_size, p.avg_size, p.max_size) == (128 << 10, 512 << 10, 2 << 20)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(0, 40_000),
    sizes=st.lists(st.integers(1, 9000), min_size=1, max_size=6),
)
def test_stream_chunking_is_split_invariant(seed: int, n: int, sizes: list[int]) -> None:
    data = _data(seed, n)
    whole = [bytes(c.data) for c in SMALL.make().cut_buf(data)] if data else []
    assert _feed(SMALL, data, sizes) == whole
    assert b"".join(whole) == data


def test_stream_chunking_respects_bounds_and_is_deterministic() -> None:
    data = random.Random(7).randbytes(300_000)
    a = _feed(SMALL, data, [1000])
    b = _feed(SMALL, data, [77, 5000, 1])
    assert a == b
    assert all(len(c) <= SMALL.max_size for c in a)
    assert all(len(c) >= SMALL.min_size for c in a[:-1])


def test_stream_memory_is_bounded_by_max_size() -> None:
    ch = StreamChunker(SMALL)
    data = random.Random(3).randbytes(200_000)
    ch.feed(data)  # one huge piece is sliced internally
    assert ch._window is not None
    assert ch._n < 3 * SMALL.max_size and len(ch._window.map) <= 3 * SMALL.max_size
    for i in range(0, len(data), 300):
        ch.feed(data[i : i + 300])
        assert ch._n < 3 * SMALL.max_size and len(ch._window.map) <= 3 * SMALL.max_size


def test_stream_window_is_freed_at_finish_and_made_again() -> None:
    ch = StreamChunker(SMALL)
    assert ch._window is None  # nothing allocated until bytes arrive
    data = _data(5, 50_000)
    first = ch.feed(data) + ch.finish()
    assert ch._window is None and b"".join(first) == data
    assert all(type(c) is bytes for c in first)
    second = ch.feed(data) + ch.finish()  # same stream again: same cuts
    assert second == first
    ch.feed(data[:1000])
    ch.close()  # dropping a stream half-way frees the window too
    assert ch._window is None and ch.finish() == []


def test_small_and_large_pieces_take_both_copy_paths_with_the_same_cuts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pieces under UNLOCKED_COPY_MIN are copied through the map, larger ones by
    # pwrite; the default window is big enough for both to reach it unsliced.
    import thur.pool.chunker as chunker

    pwritten: list[int] = []
    real = chunker.pwrite_all
    monkeypatch.setattr(
        chunker, "pwrite_all", lambda fd, data, at: (pwritten.append(len(data)), real(fd, data, at))
    )
    data = _data(7, 3_000_000)
    whole = [bytes(c.data) for c in ChunkerParams().make().cut_buf(data)]
    sizes = [200_000, 1000, UNLOCKED_COPY_MIN, UNLOCKED_COPY_MIN - 1, 7]
    assert _feed(ChunkerParams(), data, sizes) == whole
    assert pwritten and min(pwritten) >= UNLOCKED_COPY_MIN


def test_dedup_survives_an_insertion() -> None:
    # The point of CDC: an insertion only disturbs the chunks around it.
    data = _data(11, 200_000)
    edited = data[:100_000] + b"INSERTED" + data[100_000:]
    a = set(_feed(SMALL, data, [4096]))
    b = set(_feed(SMALL, edited, [4096]))
    assert len(a & b) >= 0.8 * len(a)


def test_fixed_chunker() -> None:
    ch = FixedChunker(4096)
    data = random.Random(1).randbytes(3 * 4096 + 100)
    out = ch.feed(data[:5000]) + ch.feed(data[5000:]) + ch.finish()
    assert [len(c) for c in out] == [4096, 4096, 4096, 100]
    assert b"".join(out) == data
    assert ch.finish() == []
    with pytest.raises(ValueError):
        FixedChunker(0)


def test_a_dropped_chunker_closes_its_window() -> None:
    ch = StreamChunker(SMALL)
    ch.feed(_data(6, 10_000))
    fd = ch._window.fd  # type: ignore[union-attr]
    os.fstat(fd)  # open
    del ch  # no finish(), no close(): the finalizer frees it
    with pytest.raises(OSError):
        os.fstat(fd)

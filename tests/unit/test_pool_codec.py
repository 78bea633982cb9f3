"""Per-chunk compression: every codec round-trips, raw fallback, corruption is typed."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thur.pool import ChunkCorrupt, Codec, CompressionPolicy, Compressor

CID = b"\x01" * 32


@settings(max_examples=60, deadline=None)
@given(
    codec=st.sampled_from(list(Codec)),
    level=st.integers(1, 6),
    data=st.one_of(st.binary(max_size=5000), st.binary(max_size=40).map(lambda b: b * 200)),
)
def test_round_trip_every_codec(codec: Codec, level: int, data: bytes) -> None:
    c = Compressor(CompressionPolicy(codec, level))
    used, payload = c.compress(data)
    assert used in (codec, Codec.NONE)
    assert len(payload) <= len(data)
    # Any compressor reads any codec: the codec travels with the chunk.
    assert (
        Compressor(CompressionPolicy(Codec.NONE)).decompress(CID, used, payload, len(data)) == data
    )


def test_incompressible_is_stored_raw_and_text_shrinks() -> None:
    for codec in (Codec.ZSTD, Codec.LZ4):
        c = Compressor(CompressionPolicy(codec))
        assert c.compress(os.urandom(4096))[0] is Codec.NONE
        used, payload = c.compress(b"tape " * 2000)
        assert used is codec and len(payload) < 1000


@pytest.mark.parametrize("codec", [Codec.ZSTD, Codec.LZ4])
def test_damaged_payload_is_chunk_corrupt(codec: Codec) -> None:
    c = Compressor(CompressionPolicy(codec))
    data = b"hello world " * 500
    used, payload = c.compress(data)
    with pytest.raises(ChunkCorrupt):
        c.decompress(CID, used, payload[: len(payload) // 2], len(data))
    with pytest.raises(ChunkCorrupt):
        c.decompress(CID, used, payload, len(data) + 1)


def test_unknown_codec_is_chunk_corrupt() -> None:
    with pytest.raises(ChunkCorrupt, match="unknown codec 9"):
        Compressor().decompress(CID, 9, b"x", 1)


def test_codec_numbers_are_frozen() -> None:
    assert [(c.name, c.value) for c in Codec] == [("NONE", 0), ("ZSTD", 1), ("LZ4", 2)]

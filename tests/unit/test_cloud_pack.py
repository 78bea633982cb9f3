"""Pack and index-file formats, and rebuilding the index from a bucket listing."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from thur.cloud import IndexCorrupt, LocalBackend, PackCorrupt, PackIndex, RetryPolicy
from thur.cloud.index import decode_index_file, encode_index_file, sync_from_bucket
from thur.cloud.pack import (
    ENTRY,
    TRAILER,
    PackBuilder,
    pack_id_from_key,
    pack_key,
    parse_pack,
)
from thur.pool import Codec, CompressionPolicy, Compressor, Encoded, chunk_id


def _encoded(data: bytes) -> tuple[bytes, Encoded]:
    codec, payload = Compressor(CompressionPolicy(Codec.ZSTD)).compress(data)
    return chunk_id(data), Encoded(codec, len(data), payload)


def _call(fn):  # noqa: ANN001, ANN202
    return RetryPolicy().call(fn, lambda s: None)


@settings(max_examples=30, deadline=None)
@given(chunks=st.lists(st.binary(max_size=3000), max_size=8))
def test_pack_round_trip(chunks: list[bytes]) -> None:
    b = PackBuilder()
    for data in chunks:
        b.add(*_encoded(data))
    expected_size = b.size
    pack_id, raw, entries = b.finish()
    assert len(raw) == expected_size and pack_id == blake3(raw).digest()
    assert parse_pack(pack_id, raw) == entries
    for data, e in zip(chunks, entries, strict=True):
        payload = raw[e.offset : e.offset + e.length]
        assert Compressor().decompress(e.chunk_id, e.codec, payload, e.plain_len) == data


def test_pack_layout_is_pinned() -> None:
    assert (ENTRY.size, TRAILER.size) == (52, 52)
    b = PackBuilder()
    b.add(b"\xaa" * 32, Encoded(0, 3, b"xyz"))
    pack_id, raw, _ = b.finish()
    assert raw[:8] == b"THPK\x01\x00\x00\x00"
    assert raw[8:11] == b"xyz"
    cid, off, ln, pl, codec = struct.unpack_from("<32sQIIB", raw, 11)
    assert (cid, off, ln, pl, codec) == (b"\xaa" * 32, 8, 3, 3, 0)
    assert raw[-4:] == b"THPT" and struct.unpack_from("<QI", raw, len(raw) - 52) == (11, 1)
    assert pack_id_from_key(pack_key(pack_id)) == pack_id
    assert pack_key(pack_id).startswith(f"packs/{pack_id.hex()[:2]}/")
    assert pack_id_from_key("packs/zz/nothex") is None


@pytest.mark.parametrize("where", [0, -1, -40, -60])
def test_damaged_pack_is_detected(where: int) -> None:
    b = PackBuilder()
    b.add(*_encoded(b"some chunk" * 50))
    pack_id, raw, _ = b.finish()
    bad = bytearray(raw)
    bad[where] ^= 1
    with pytest.raises(PackCorrupt):
        parse_pack(pack_id, bytes(bad))


def test_index_file_round_trip_and_verification() -> None:
    b = PackBuilder()
    for i in range(3):
        b.add(*_encoded(bytes([i]) * 100))
    _, _, entries = b.finish()
    key, data = encode_index_file(entries)
    assert key == f"index/{blake3(data).hexdigest()}" and len(data) == 12 + 84 * 3
    assert decode_index_file(key, data) == entries
    with pytest.raises(IndexCorrupt):
        decode_index_file(key, data[:-1])


def _upload_pack(backend: LocalBackend, chunks: list[bytes], *, with_index: bool):  # noqa: ANN202
    b = PackBuilder()
    for data in chunks:
        b.add(*_encoded(data))
    pack_id, raw, entries = b.finish()
    backend.put(pack_key(pack_id), raw)
    if with_index:
        backend.put(*encode_index_file(entries))
    return entries


def test_index_rebuilds_from_pack_listing_alone(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    backend = LocalBackend(tmp_path / "bucket")
    indexed = _upload_pack(backend, [b"a" * 500, b"b" * 600], with_index=True)
    orphan = _upload_pack(backend, [b"c" * 700], with_index=False)  # crash before index PUT

    fresh = PackIndex(tmp_path / "one.sqlite")
    report = sync_from_bucket(fresh, backend, _call)
    assert (report.index_files_loaded, report.packs_scanned, report.entries_added) == (1, 1, 3)
    for e in indexed + orphan:
        assert fresh.lookup(e.chunk_id) == e
    # The scan wrote an index file for the orphan pack: the next machine reads no packs.
    other = PackIndex(tmp_path / "two.sqlite")
    report = sync_from_bucket(other, backend, _call)
    assert (report.index_files_loaded, report.packs_scanned, len(other)) == (2, 0, 3)
    # Nothing new: a second sync is a no-op.
    assert sync_from_bucket(fresh, backend, _call).entries_added == 0

    # With no index files at all, the packs alone are enough.
    for info in list(backend.list("index/")):
        backend.delete(info.key)
    bare = PackIndex(tmp_path / "three.sqlite")
    report = sync_from_bucket(bare, backend, _call, write_missing=False)
    assert (report.packs_scanned, len(bare)) == (2, 3)

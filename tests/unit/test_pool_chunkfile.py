"""Chunk file v2: the seal makes the pre-upload check cheap, never weaker.

Every damaged cache file must still be refused by the uploader (it stays
pinned and is reported), v1 files keep working, and only payloads the pool
produced itself from hashed plaintext skip the decode + re-hash.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.unit.chunk_kit import as_chunk_file, chunk_bytes, overwrite
from thur.cloud import LocalBackend, PackIndex, TierConfig, TieredPool
from thur.cloud.pack import pack_key, parse_pack
from thur.pool import (
    ChunkCorrupt,
    Codec,
    CompressionPolicy,
    Encoded,
    LocalStore,
    ManualClock,
    PoolConfig,
    chunk_id,
    chunkfile,
)


def plain(i: int, n: int = 9000) -> bytes:
    return (f"plaintext {i} ".encode() * n)[:n]


def make(tmp: Path, codec: Codec = Codec.ZSTD) -> TieredPool:
    clock = ManualClock()
    store = LocalStore(
        PoolConfig(
            data_dir=tmp / "pool",
            budget_bytes=1 << 20,
            disk_free_floor=0,
            fsync=False,
            max_wait=0.0,
            compression=CompressionPolicy(codec),
        ),
        clock=clock,
    )
    (tmp / "bucket").mkdir(exist_ok=True)
    backend = LocalBackend(tmp / "bucket", fsync=False)
    index = PackIndex(tmp / "pool" / "index.sqlite")
    return TieredPool(store, backend, index, TierConfig(pack_target=50_000, workers=2), clock=clock)


def uploaded(tier: TieredPool) -> dict[bytes, bytes]:
    """chunk id -> payload bytes, from every pack in the bucket."""
    out = {}
    for p in (tier.backend.root / "packs").rglob("*"):  # type: ignore[attr-defined]
        if p.is_file():
            data = p.read_bytes()
            for e in parse_pack(bytes.fromhex(p.name), data):
                out[e.chunk_id] = data[e.offset : e.offset + e.length]
                assert pack_key(e.pack_id).endswith(p.name)
    return out


def test_put_writes_a_sealed_v2_file(tmp_path: Path) -> None:
    tier = make(tmp_path)
    cid = tier.put(plain(1)).chunk_id
    raw = chunk_bytes(tier.store, cid)
    parsed = chunkfile.parse(cid, raw)
    assert parsed.version == 2 and parsed.flags == chunkfile.SEALED and parsed.seal_ok()
    assert len(raw) == chunkfile.HEADER_V2_LEN + len(parsed.enc.payload)
    assert tier.store.get(cid) == plain(1)
    tier.flush()
    assert uploaded(tier)[cid] == parsed.enc.payload  # the bucket copy is the sealed payload


# Every byte of a sealed file matters: magic/version/lengths (structure),
# codec/flags/plain_len (covered by the seal), the seal, the payload.
@pytest.mark.parametrize("where", ["codec", "flags", "plain_len", "seal", "payload", "last"])
def test_damaged_sealed_file_is_never_uploaded(tmp_path: Path, where: str) -> None:
    tier = make(tmp_path)
    bad = tier.put(plain(1)).chunk_id
    good = tier.put(plain(2)).chunk_id
    raw = bytearray(chunk_bytes(tier.store, bad))
    at = {"codec": 5, "flags": 6, "plain_len": 8, "seal": 20, "payload": 60, "last": -1}[where]
    raw[at] ^= 0x01 if where == "flags" else 0x40
    overwrite(tier.store, bad, bytes(raw))
    report = tier.flush()
    assert report.corrupt == [bad]
    assert bad not in uploaded(tier) and good in uploaded(tier)
    assert not tier.store.is_durable(bad) and tier.store.is_durable(good)
    # get() verifies the plaintext, not the seal: right bytes or ChunkCorrupt.
    with contextlib.suppress(ChunkCorrupt):
        assert tier.get(bad) == plain(1)


def test_resealed_file_with_wrong_payload_is_caught_when_unsealed(tmp_path: Path) -> None:
    # A well-formed v2 file without the SEALED flag (what put_encoded writes)
    # is decoded and re-hashed before upload: a seal over bad bytes is not enough.
    tier = make(tmp_path, Codec.NONE)
    cid = chunk_id(plain(3))
    tier.store.put_encoded(cid, Encoded(int(Codec.NONE), 9000, plain(4)), durable=False)
    assert chunkfile.parse(cid, chunk_bytes(tier.store, cid)).flags == 0
    report = tier.flush()
    assert report.corrupt == [cid] and report.packs == 0


def test_unsealed_good_file_is_uploaded(tmp_path: Path) -> None:
    tier = make(tmp_path, Codec.NONE)
    cid = chunk_id(plain(5))
    tier.store.put_encoded(cid, Encoded(int(Codec.NONE), 9000, plain(5)), durable=False)
    assert tier.flush().chunks == 1 and tier.store.is_durable(cid)


@pytest.mark.parametrize("damage", [False, True])
def test_version_1_files_still_read_and_fully_verified(tmp_path: Path, damage: bool) -> None:
    tier = make(tmp_path)
    cid = tier.put(plain(6)).chunk_id
    enc = chunkfile.decode(cid, chunk_bytes(tier.store, cid))
    v1 = chunkfile.HEADER.pack(chunkfile.MAGIC, 1, enc.codec, 0, 0, enc.plain_len, len(enc.payload))
    payload = bytearray(enc.payload)
    if damage:
        # Still decodes (raw codec), so only the plaintext hash can catch it.
        payload = bytearray(plain(7))
        v1 = chunkfile.HEADER.pack(chunkfile.MAGIC, 1, 0, 0, 0, 9000, 9000)
    as_chunk_file(tier.store, cid, v1 + bytes(payload))  # as a pool of schema 1 wrote it
    if damage:
        with pytest.raises(ChunkCorrupt):
            tier.store.get(cid)
        assert tier.flush().corrupt == [cid] and cid not in uploaded(tier)
    else:
        assert tier.store.get(cid) == plain(6)
        assert tier.flush().chunks == 1 and uploaded(tier)[cid] == enc.payload


def test_unknown_version_and_flags_are_corrupt(tmp_path: Path) -> None:
    tier = make(tmp_path)
    cid = tier.put(plain(8)).chunk_id
    raw = chunk_bytes(tier.store, cid)
    for at, value in ((4, 3), (6, 0x80), (7, 1)):
        bad = bytearray(raw)
        bad[at] = value
        with pytest.raises(ChunkCorrupt):
            chunkfile.parse(cid, bytes(bad))
    with pytest.raises(ChunkCorrupt):
        chunkfile.parse(cid, raw[:40])  # shorter than the v2 header


def test_mutable_input_is_stored_as_hashed(tmp_path: Path) -> None:
    # put() hashes and compresses one private copy, so a caller reusing its
    # buffer cannot make a sealed payload that differs from the id's bytes.
    tier = make(tmp_path)
    buf = bytearray(plain(9))
    res = tier.store.put(memoryview(buf))
    buf[:4] = b"XXXX"
    assert res.chunk_id == chunk_id(plain(9)) and tier.store.get(res.chunk_id) == plain(9)
    tier.flush()
    assert tier.store.is_durable(res.chunk_id)

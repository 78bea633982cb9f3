"""The local chunk file: one file per chunk in the warm cache.

Layout (little-endian), version 2 (written since 2026-11-22)::

    offset size field
    0      4    magic       b"THCK"
    4      1    version     2
    5      1    codec       thur.pool.codec.Codec (0 none, 1 zstd, 2 lz4)
    6      1    flags       bit 0 SEALED (see below); other bits 0
    7      1    reserved    0
    8      4    plain_len   length of the plaintext (what the id hashes)
    12     4    payload_len length of the payload that follows
    16     32   seal        BLAKE3-256 of bytes 0..16 of this header + payload
    48     ...  payload     the chunk encoded with `codec`

Version 1 (still read, no longer written) is the same without `flags`
(byte 6 and 7 reserved) and without `seal`: a 16-byte header, then the payload.

The payload is byte-for-byte the blob that goes into a pack, so uploading
never re-compresses. A reader checks magic, version and both lengths; `get()`
decodes and compares BLAKE3(plaintext) with the id from the file name.

`seal` and SEALED make the uploader's check cheap (docs/FORMATS.md, "Chunk
file v2"): the seal is taken in the writing process over the payload it just
produced, by compressing plaintext it had itself hashed to the id, before a
byte went to disk. A file whose seal still matches is therefore exactly the
payload produced from the hashed plaintext, and needs no decode + re-hash
before upload. SEALED is set only by that path (`LocalStore.put`); an
encoding handed in from outside (`put_encoded`) is sealed against later
damage but not SEALED, and is fully verified before upload like a v1 file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from blake3 import blake3

from .errors import ChunkCorrupt

MAGIC = b"THCK"
VERSION = 2
VERSION_1 = 1
HEADER = struct.Struct("<4sBBBBII")  # the first 16 bytes, both versions
SEAL_LEN = 32
HEADER_V2_LEN = HEADER.size + SEAL_LEN
SEALED = 0x01  # flags: the writer hashed the plaintext and produced this payload from it


@dataclass(frozen=True, slots=True)
class Encoded:
    """A chunk as stored: codec, plaintext length and the encoded payload."""

    codec: int
    plain_len: int
    payload: bytes


def _seal(head16: bytes, payload: bytes | memoryview) -> bytes:
    h = blake3(head16)
    h.update(payload)
    return h.digest()


def header(enc: Encoded, *, sealed: bool = False) -> bytes:
    """The 48-byte v2 header; the file is `header(enc) + enc.payload`.

    `sealed=True` only from a writer that produced `enc.payload` itself from
    plaintext whose BLAKE3 it computed as the id (see the module docstring).
    """
    head = HEADER.pack(
        MAGIC, VERSION, enc.codec, SEALED if sealed else 0, 0, enc.plain_len, len(enc.payload)
    )
    return head + _seal(head, enc.payload)


def encode(enc: Encoded, *, sealed: bool = False) -> bytes:
    return header(enc, sealed=sealed) + enc.payload


def file_size(enc: Encoded) -> int:
    return HEADER_V2_LEN + len(enc.payload)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A structurally valid chunk file, before any hash check."""

    enc: Encoded
    version: int
    flags: int
    seal: bytes | None  # v2 only
    head16: bytes

    def seal_ok(self) -> bool:
        return self.seal is not None and _seal(self.head16, self.enc.payload) == self.seal


def parse(chunk_id: bytes, raw: bytes) -> Parsed:
    """Parse a chunk file of either version; structural damage is ChunkCorrupt."""
    if len(raw) < HEADER.size:
        raise ChunkCorrupt(chunk_id, f"file is {len(raw)} bytes, shorter than its header")
    magic, version, codec, flags, reserved, plain_len, payload_len = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise ChunkCorrupt(chunk_id, f"bad magic {magic!r}")
    if version == VERSION_1:
        start, seal, flags = HEADER.size, None, 0  # bytes 6-7 were reserved
    elif version == VERSION:
        if len(raw) < HEADER_V2_LEN:
            raise ChunkCorrupt(chunk_id, f"file is {len(raw)} bytes, shorter than its header")
        if flags & ~SEALED or reserved:
            raise ChunkCorrupt(chunk_id, f"unknown flags {flags:#x}/{reserved:#x}")
        start, seal = HEADER_V2_LEN, raw[HEADER.size : HEADER_V2_LEN]
    else:
        raise ChunkCorrupt(chunk_id, f"unsupported chunk file version {version}")
    if len(raw) - start != payload_len:
        raise ChunkCorrupt(
            chunk_id, f"payload is {len(raw) - start} bytes, header says {payload_len}"
        )
    return Parsed(Encoded(codec, plain_len, raw[start:]), version, flags, seal, raw[: HEADER.size])


def decode(chunk_id: bytes, raw: bytes) -> Encoded:
    """Parse a chunk file (structure only, no hash check)."""
    return parse(chunk_id, raw).enc

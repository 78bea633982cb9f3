"""The local chunk file: one file per chunk in the warm cache.

Layout (little-endian), version 1::

    offset size field
    0      4    magic       b"THCK"
    4      1    version     1
    5      1    codec       thur.pool.codec.Codec (0 none, 1 zstd, 2 lz4)
    6      2    reserved    0
    8      4    plain_len   length of the plaintext (what the id hashes)
    12     4    payload_len length of the payload that follows
    16     ...  payload     the chunk encoded with `codec`

The payload is byte-for-byte the blob that goes into a pack, so uploading
never re-compresses. A reader checks magic, version and both lengths, decodes,
and compares BLAKE3(plaintext) with the id taken from the file name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ChunkCorrupt

MAGIC = b"THCK"
VERSION = 1
HEADER = struct.Struct("<4sBBHII")


@dataclass(frozen=True, slots=True)
class Encoded:
    """A chunk as stored: codec, plaintext length and the encoded payload."""

    codec: int
    plain_len: int
    payload: bytes


def header(enc: Encoded) -> bytes:
    """The 16-byte header; the file is `header(enc) + enc.payload`."""
    return HEADER.pack(MAGIC, VERSION, enc.codec, 0, enc.plain_len, len(enc.payload))


def encode(enc: Encoded) -> bytes:
    return header(enc) + enc.payload


def file_size(enc: Encoded) -> int:
    return HEADER.size + len(enc.payload)


def decode(chunk_id: bytes, raw: bytes) -> Encoded:
    """Parse a chunk file; structural damage is ChunkCorrupt."""
    if len(raw) < HEADER.size:
        raise ChunkCorrupt(chunk_id, f"file is {len(raw)} bytes, shorter than its header")
    magic, version, codec, _reserved, plain_len, payload_len = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise ChunkCorrupt(chunk_id, f"bad magic {magic!r}")
    if version != VERSION:
        raise ChunkCorrupt(chunk_id, f"unsupported chunk file version {version}")
    if len(raw) - HEADER.size != payload_len:
        raise ChunkCorrupt(
            chunk_id, f"payload is {len(raw) - HEADER.size} bytes, header says {payload_len}"
        )
    return Encoded(codec, plain_len, raw[HEADER.size :])

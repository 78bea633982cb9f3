"""Packs: many chunk payloads in one object, with the chunk table inside.

A pack is self-describing, so the pack index can be rebuilt from a bucket
listing alone. Object key: ``packs/<hh>/<64 hex>`` where the hex is the
BLAKE3-256 of the whole pack and ``hh`` its first two digits (uploads are
idempotent and spread over prefixes).

Layout, version 1 (little-endian)::

    offset        size    field
    0             4       magic      b"THPK"
    4             2       version    1
    6             2       reserved   0
    8             ...     blobs      chunk payloads back to back, in table order
    table_offset  52 * n  chunk table, n entries of ENTRY:
                            0  32  chunk_id   BLAKE3-256 of the plaintext
                            32  8  offset     of the payload from the pack start
                            40  4  length     payload bytes
                            44  4  plain_len  plaintext bytes
                            48  1  codec      0 none, 1 zstd, 2 lz4
                            49  3  reserved   0
    size - 52     52      trailer, TRAILER:
                            0   8  table_offset
                            8   4  entry_count
                            12  2  version    1
                            14  2  reserved   0
                            16 32  table_hash BLAKE3-256 of the chunk table bytes
                            48  4  magic      b"THPT"

A reader that knows the object size fetches the trailer with one ranged GET,
the table with a second, and any chunk with a third; every chunk is verified
against its id after decoding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from blake3 import blake3

from thur.pool import Encoded

from .errors import BackendPermanent

HEAD_MAGIC = b"THPK"
TRAILER_MAGIC = b"THPT"
VERSION = 1
HEADER = struct.Struct("<4sHH")
ENTRY = struct.Struct("<32sQIIB3x")
TRAILER = struct.Struct("<QIHH32s4s")
PREFIX = "packs/"


class PackCorrupt(BackendPermanent):
    """A pack's header, trailer or table does not parse or verify."""


@dataclass(frozen=True, slots=True)
class PackEntry:
    """Where one chunk lives: also the row of the pack index."""

    chunk_id: bytes
    pack_id: bytes
    offset: int
    length: int
    plain_len: int
    codec: int


def pack_key(pack_id: bytes) -> str:
    h = pack_id.hex()
    return f"{PREFIX}{h[:2]}/{h}"


def pack_id_from_key(key: str) -> bytes | None:
    """The pack id named by a key, or None for anything that is not a pack."""
    if not key.startswith(PREFIX):
        return None
    name = key.rpartition("/")[2]
    try:
        raw = bytes.fromhex(name)
    except ValueError:
        return None
    return raw if len(raw) == 32 and key == pack_key(raw) else None


class PackBuilder:
    """Accumulate encoded chunks, then produce the pack bytes and its entries."""

    def __init__(self) -> None:
        self._parts: list[bytes] = [HEADER.pack(HEAD_MAGIC, VERSION, 0)]
        self._size = HEADER.size
        self._rows: list[tuple[bytes, int, int, int, int]] = []

    @property
    def size(self) -> int:
        return self._size + ENTRY.size * len(self._rows) + TRAILER.size

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, chunk_id: bytes, enc: Encoded) -> None:
        self._rows.append((chunk_id, self._size, len(enc.payload), enc.plain_len, enc.codec))
        self._parts.append(enc.payload)
        self._size += len(enc.payload)

    def finish(self) -> tuple[bytes, bytes, list[PackEntry]]:
        """Return (pack_id, pack bytes, entries)."""
        table = b"".join(ENTRY.pack(*row) for row in self._rows)
        trailer = TRAILER.pack(
            self._size, len(self._rows), VERSION, 0, blake3(table).digest(), TRAILER_MAGIC
        )
        data = b"".join([*self._parts, table, trailer])
        # Drop the pieces now: an upload worker holds one pack, not two
        # copies of it, while its PUT runs (peak RSS with many workers).
        self._parts = []
        pack_id = blake3(data, max_threads=blake3.AUTO).digest()
        entries = [
            PackEntry(cid, pack_id, off, ln, pl, codec) for cid, off, ln, pl, codec in self._rows
        ]
        return pack_id, data, entries


def parse_trailer(key: str, raw: bytes, pack_size: int) -> tuple[int, int, bytes]:
    """Return (table_offset, entry_count, table_hash) from the last TRAILER.size bytes."""
    if len(raw) != TRAILER.size:
        raise PackCorrupt(f"{key}: trailer is {len(raw)} bytes")
    table_offset, count, version, _res, table_hash, magic = TRAILER.unpack(raw)
    if magic != TRAILER_MAGIC or version != VERSION:
        raise PackCorrupt(f"{key}: bad trailer magic {magic!r} or version {version}")
    if table_offset + count * ENTRY.size + TRAILER.size != pack_size:
        raise PackCorrupt(f"{key}: trailer does not match the pack size {pack_size}")
    return table_offset, count, table_hash


def parse_table(
    key: str, pack_id: bytes, table: bytes, table_hash: bytes, table_offset: int
) -> list[PackEntry]:
    """Verify and decode a chunk table; every blob must lie between header and table."""
    if blake3(table).digest() != table_hash:
        raise PackCorrupt(f"{key}: chunk table hash mismatch")
    out = []
    for cid, off, ln, pl, codec in ENTRY.iter_unpack(table):
        if off < HEADER.size or off + ln > table_offset:
            raise PackCorrupt(f"{key}: blob of {cid.hex()} lies outside the blob area")
        out.append(PackEntry(cid, pack_id, off, ln, pl, codec))
    return out


def parse_pack(pack_id: bytes, data: bytes) -> list[PackEntry]:
    """Parse a whole pack held in memory (checks header, trailer, table)."""
    key = pack_key(pack_id)
    magic, version, _res = HEADER.unpack_from(data)
    if magic != HEAD_MAGIC or version != VERSION:
        raise PackCorrupt(f"{key}: bad header magic {magic!r} or version {version}")
    table_offset, count, table_hash = parse_trailer(key, data[-TRAILER.size :], len(data))
    table = data[table_offset : table_offset + count * ENTRY.size]
    return parse_table(key, pack_id, table, table_hash, table_offset)

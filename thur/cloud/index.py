"""The pack index: chunk id → (pack, offset, length, plaintext length, codec).

Kept twice:

- locally in ``index.sqlite`` (what every read and every dedup check asks);
- in the bucket as immutable *index files*, one per uploaded pack (or per
  rebuild batch), so another machine — or this one after losing its disk —
  learns the index from a listing.

Index file, key ``index/<64 hex>`` where the hex is BLAKE3-256 of the file
(readers verify it), version 1, little-endian::

    offset  size    field
    0       4       magic        b"THIX"
    4       2       version      1
    6       2       reserved     0
    8       4       entry_count  n
    12      84 * n  entries, IX_ENTRY:
                      0  32  chunk_id
                      32 32  pack_id
                      64  8  offset     of the payload in the pack
                      72  4  length     payload bytes
                      76  4  plain_len
                      80  1  codec
                      81  3  reserved   0

Write order: a pack is PUT before the index file naming it, and the index
file before the local index row and before the local pool marks the chunks
durable (evictable). Hence a listed index file never names a missing pack,
and packs without an index file (a crash between the two PUTs) are found by
`sync_from_bucket`, which reads their own chunk tables.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from blake3 import blake3

from .backend import Backend
from .errors import BackendPermanent
from .pack import ENTRY, TRAILER, PackEntry, pack_id_from_key, pack_key, parse_table, parse_trailer

T = TypeVar("T")
Call = Callable[[Callable[[], T]], T]

IX_MAGIC = b"THIX"
IX_VERSION = 1
IX_HEADER = struct.Struct("<4sHHI")
IX_ENTRY = struct.Struct("<32s32sQIIB3x")
INDEX_PREFIX = "index/"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(
    chunk_id BLOB PRIMARY KEY, pack_id BLOB NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, plain_len INTEGER NOT NULL, codec INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packs(pack_id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_files(key TEXT PRIMARY KEY) WITHOUT ROWID;
"""


class IndexCorrupt(BackendPermanent):
    """An index file does not parse or does not hash to its name."""


def encode_index_file(entries: list[PackEntry]) -> tuple[str, bytes]:
    """Return (key, bytes) of an index file listing `entries`."""
    body = [IX_HEADER.pack(IX_MAGIC, IX_VERSION, 0, len(entries))]
    body += [
        IX_ENTRY.pack(e.chunk_id, e.pack_id, e.offset, e.length, e.plain_len, e.codec)
        for e in entries
    ]
    data = b"".join(body)
    return f"{INDEX_PREFIX}{blake3(data).hexdigest()}", data


def decode_index_file(key: str, data: bytes) -> list[PackEntry]:
    if f"{INDEX_PREFIX}{blake3(data).hexdigest()}" != key:
        raise IndexCorrupt(f"{key}: content does not hash to the name")
    if len(data) < IX_HEADER.size:
        raise IndexCorrupt(f"{key}: shorter than its header")
    magic, version, _res, count = IX_HEADER.unpack_from(data)
    if magic != IX_MAGIC or version != IX_VERSION:
        raise IndexCorrupt(f"{key}: bad magic {magic!r} or version {version}")
    if len(data) != IX_HEADER.size + count * IX_ENTRY.size:
        raise IndexCorrupt(f"{key}: {count} entries do not fit {len(data)} bytes")
    return [PackEntry(*row) for row in IX_ENTRY.iter_unpack(data[IX_HEADER.size :])]


@dataclass(slots=True)
class SyncReport:
    index_files_loaded: int = 0
    packs_scanned: int = 0  # packs found without an index file: tables read
    entries_added: int = 0


class PackIndex:
    """The local copy of the pack index (sqlite, thread-safe)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def lookup(self, chunk_id: bytes) -> PackEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT chunk_id, pack_id, offset, length, plain_len, codec FROM entries"
                " WHERE chunk_id = ?",
                (chunk_id,),
            ).fetchone()
        return None if row is None else PackEntry(bytes(row[0]), bytes(row[1]), *row[2:])

    def __contains__(self, chunk_id: bytes) -> bool:
        with self._lock:
            return (
                self._db.execute("SELECT 1 FROM entries WHERE chunk_id = ?", (chunk_id,)).fetchone()
                is not None
            )

    def add(self, entries: Iterable[PackEntry], index_key: str | None = None) -> int:
        """Record entries (first location of a chunk wins); returns rows added."""
        entries = list(entries)
        with self._lock:
            self._db.execute("BEGIN")
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO entries VALUES(?, ?, ?, ?, ?, ?)",
                [
                    (e.chunk_id, e.pack_id, e.offset, e.length, e.plain_len, e.codec)
                    for e in entries
                ],
            )
            added = self._db.total_changes - before
            self._db.executemany(
                "INSERT OR IGNORE INTO packs VALUES(?)", {(e.pack_id,) for e in entries}
            )
            if index_key is not None:
                self._db.execute("INSERT OR IGNORE INTO index_files VALUES(?)", (index_key,))
            self._db.execute("COMMIT")
        return added

    def known_index_files(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT key FROM index_files")}

    def known_packs(self) -> set[bytes]:
        with self._lock:
            return {bytes(r[0]) for r in self._db.execute("SELECT pack_id FROM packs")}

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM entries").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def sync_from_bucket(
    index: PackIndex, backend: Backend, call: Call, *, write_missing: bool = True
) -> SyncReport:
    """Bring the local index up to date with the bucket.

    Loads every index file not seen yet; then reads the chunk table of every
    pack no index file mentions (a crash between pack and index PUT, or an
    empty bucket index) and, with `write_missing`, uploads an index file for
    them so the next machine need not read those packs again.
    """
    report = SyncReport()
    known = index.known_index_files()
    for info in list(call(lambda: list(backend.list(INDEX_PREFIX)))):
        if info.key in known:
            continue
        data = call(lambda k=info.key: backend.get(k))
        report.entries_added += index.add(decode_index_file(info.key, data), info.key)
        report.index_files_loaded += 1
    have = index.known_packs()
    found: list[PackEntry] = []
    for info in list(call(lambda: list(backend.list("packs/")))):
        pid = pack_id_from_key(info.key)
        if pid is None or pid in have:
            continue
        found += read_pack_table(backend, call, pid, info.size)
        report.packs_scanned += 1
    if found:
        key = None
        if write_missing:
            key, data = encode_index_file(found)
            call(lambda: backend.put(key, data))
        report.entries_added += index.add(found, key)
    return report


def read_pack_table(backend: Backend, call: Call, pack_id: bytes, size: int) -> list[PackEntry]:
    """Two ranged GETs: the trailer, then the chunk table."""
    key = pack_key(pack_id)
    if size < TRAILER.size:
        raise IndexCorrupt(f"{key}: {size} bytes is too small for a pack")
    raw = call(lambda: backend.get(key, size - TRAILER.size, TRAILER.size))
    table_offset, count, table_hash = parse_trailer(key, raw, size)
    table = call(lambda: backend.get(key, table_offset, count * ENTRY.size))
    return parse_table(key, pack_id, table, table_hash, table_offset)

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

Write order: packs are PUT before the index file naming them (one index file
covers a batch of packs, see tier.py), and the index file before the local
index rows and before the local pool marks the chunks durable (evictable).
Hence a listed index file never names a missing pack, and packs without an
index file (a crash between the PUTs) are found by `sync_from_bucket`, which
reads their own chunk tables. GC (`thur.cloud.gc`) deletes index files before
the packs they name, after PUTting replacements for what must survive.

A chunk may have several locations (two machines uploaded it at once, or a
repack is half done): the local index keeps every (chunk, pack) pair it has
learnt and reads use any of them, so forgetting one pack never forgets a
chunk that another pack still holds.
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

from thur.sqlbatch import execute_values, in_lists

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

_SCHEMA_VERSION = "2"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries(
    chunk_id BLOB NOT NULL, pack_id BLOB NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, plain_len INTEGER NOT NULL, codec INTEGER NOT NULL,
    PRIMARY KEY(chunk_id, pack_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_pack ON entries(pack_id);
CREATE TABLE IF NOT EXISTS packs(pack_id BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_files(key TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_file_packs(
    key TEXT NOT NULL, pack_id BLOB NOT NULL, PRIMARY KEY(key, pack_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS index_file_packs_by_pack ON index_file_packs(pack_id);
"""
_COLS = "chunk_id, pack_id, offset, length, plain_len, codec"


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
    packs_forgotten: int = 0  # known here, gone from the bucket (another machine's GC)


def _row(e: PackEntry) -> tuple[bytes, bytes, int, int, int, int]:
    return (e.chunk_id, e.pack_id, e.offset, e.length, e.plain_len, e.codec)


def _entry(row: tuple) -> PackEntry:  # type: ignore[type-arg]
    return PackEntry(bytes(row[0]), bytes(row[1]), *row[2:])


@dataclass(frozen=True, slots=True)
class IndexTotals:
    chunks: int  # distinct chunks
    plain_bytes: int  # their plaintext
    stored_bytes: int  # their payloads as stored in packs (compressed)
    packs: int
    index_files: int


class PackIndex:
    """The local copy of the pack index (sqlite, thread-safe)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._migrate_v1()
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta VALUES('schema_version', ?)", (_SCHEMA_VERSION,)
        )

    def _migrate_v1(self) -> None:
        # Version 1 keyed entries by chunk alone (one location per chunk) and
        # did not record which packs an index file names. Keep the entries;
        # forget the index files so the next sync re-reads them and learns
        # that mapping (GC needs it to know which index files to rewrite).
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        if "entries" not in tables or "meta" in tables:
            return
        self._db.executescript(
            "BEGIN;"
            "ALTER TABLE entries RENAME TO entries_v1;"
            + _SCHEMA
            + f"INSERT INTO entries SELECT {_COLS} FROM entries_v1;"
            "DROP TABLE entries_v1; DELETE FROM index_files;"
            f"INSERT INTO meta VALUES('schema_version', '{_SCHEMA_VERSION}');"
            "COMMIT;"
        )

    def lookup(self, chunk_id: bytes) -> PackEntry | None:
        """One location of the chunk (any), or None."""
        found = self.locations(chunk_id)
        return found[0] if found else None

    def locations(self, chunk_id: bytes) -> list[PackEntry]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM entries WHERE chunk_id = ?", (chunk_id,)
            ).fetchall()
        return [_entry(r) for r in rows]

    def __contains__(self, chunk_id: bytes) -> bool:
        with self._lock:
            return (
                self._db.execute(
                    "SELECT 1 FROM entries WHERE chunk_id = ? LIMIT 1", (chunk_id,)
                ).fetchone()
                is not None
            )

    def known(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        """Those of `chunk_ids` with a location: `in`, one statement per sqlbatch.BATCH ids."""
        out: set[bytes] = set()
        for marks, part in in_lists(chunk_ids):
            with self._lock:
                rows = self._db.execute(
                    f"SELECT DISTINCT chunk_id FROM entries WHERE chunk_id IN ({marks})", part
                ).fetchall()
            out.update(bytes(r[0]) for r in rows)
        return out

    def add(self, entries: Iterable[PackEntry], index_key: str | None = None) -> int:
        """Record locations (and that `index_key` names their packs); returns rows added."""
        entries = list(entries)
        with self._lock:
            self._db.execute("BEGIN")
            added = self._add_locked(entries, index_key)
            self._db.execute("COMMIT")
        return added

    def _add_locked(self, entries: list[PackEntry], index_key: str | None) -> int:
        before = self._db.total_changes
        rows = [_row(e) for e in entries]
        execute_values(self._db, "INSERT OR IGNORE INTO entries {values}", rows)
        added = self._db.total_changes - before
        packs = list({(e.pack_id,) for e in entries})
        execute_values(self._db, "INSERT OR IGNORE INTO packs {values}", packs)
        if index_key is not None:
            self._db.execute("INSERT OR IGNORE INTO index_files VALUES(?)", (index_key,))
            execute_values(
                self._db,
                "INSERT OR IGNORE INTO index_file_packs {values}",
                [(index_key, p) for (p,) in packs],
            )
        return added

    def rewrite(
        self,
        added: list[tuple[str, list[PackEntry]]],
        dropped_packs: Iterable[bytes],
        dropped_index_files: Iterable[str],
    ) -> None:
        """GC, in one transaction: learn new index files, forget packs and index files."""
        with self._lock:
            self._db.execute("BEGIN")
            for key, entries in added:
                self._add_locked(entries, key)
            self._forget_locked(dropped_packs, dropped_index_files)
            self._db.execute("COMMIT")

    def forget(self, packs: Iterable[bytes] = (), index_files: Iterable[str] = ()) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._forget_locked(packs, index_files)
            self._db.execute("COMMIT")

    def _forget_locked(self, packs: Iterable[bytes], index_files: Iterable[str]) -> None:
        p = [(x,) for x in packs]
        k = [(x,) for x in index_files]
        self._db.executemany("DELETE FROM entries WHERE pack_id = ?", p)
        self._db.executemany("DELETE FROM packs WHERE pack_id = ?", p)
        self._db.executemany("DELETE FROM index_file_packs WHERE pack_id = ?", p)
        self._db.executemany("DELETE FROM index_files WHERE key = ?", k)
        self._db.executemany("DELETE FROM index_file_packs WHERE key = ?", k)

    def entries_of_pack(self, pack_id: bytes) -> list[PackEntry]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLS} FROM entries WHERE pack_id = ? ORDER BY offset", (pack_id,)
            ).fetchall()
        return [_entry(r) for r in rows]

    def index_files_naming(self, pack_ids: Iterable[bytes]) -> set[str]:
        with self._lock:
            return {
                r[0]
                for p in pack_ids
                for r in self._db.execute(
                    "SELECT key FROM index_file_packs WHERE pack_id = ?", (p,)
                )
            }

    def packs_named_by(self, keys: Iterable[str]) -> set[bytes]:
        with self._lock:
            return {
                bytes(r[0])
                for k in keys
                for r in self._db.execute(
                    "SELECT pack_id FROM index_file_packs WHERE key = ?", (k,)
                )
            }

    def known_index_files(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT key FROM index_files")}

    def known_packs(self) -> set[bytes]:
        with self._lock:
            return {bytes(r[0]) for r in self._db.execute("SELECT pack_id FROM packs")}

    def totals(self) -> IndexTotals:
        """What the bucket holds by this index (`system stats`): each chunk counted once."""
        with self._lock:
            chunks, plain, stored = self._db.execute(
                "SELECT count(*), coalesce(sum(p), 0), coalesce(sum(s), 0) FROM "
                "(SELECT min(plain_len) AS p, min(length) AS s FROM entries GROUP BY chunk_id)"
            ).fetchone()
            packs = self._db.execute("SELECT count(*) FROM packs").fetchone()[0]
            files = self._db.execute("SELECT count(*) FROM index_files").fetchone()[0]
        return IndexTotals(chunks, plain, stored, packs, files)

    def __len__(self) -> int:
        """Distinct chunks known (a chunk in two packs counts once)."""
        with self._lock:
            return self._db.execute("SELECT count(DISTINCT chunk_id) FROM entries").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def sync_from_bucket(
    index: PackIndex, backend: Backend, call: Call, *, write_missing: bool = True
) -> SyncReport:
    """Bring the local index up to date with the bucket.

    Lists index files *before* packs: every pack an index file names was PUT
    before that file, so it is in the later pack listing unless GC has since
    deleted it (then its entries are skipped). Forgets packs known here that
    are gone (another machine's GC). Loads every index file not seen yet;
    then reads the chunk table of every pack no index file mentions (a crash
    between pack and index PUT, or an empty bucket index) and, with
    `write_missing`, uploads an index file for them so the next machine need
    not read those packs again.
    """
    report = SyncReport()
    listed_ix = [i.key for i in call(lambda: list(backend.list(INDEX_PREFIX)))]
    known_before = index.known_packs()
    listed = list_packs(backend, call)
    gone = known_before - listed.keys()
    known_ix = index.known_index_files()
    index.forget(gone, known_ix - set(listed_ix))
    report.packs_forgotten = len(gone)
    for key in listed_ix:
        if key in known_ix:
            continue
        data = call(lambda k=key: backend.get(k))
        entries = [e for e in decode_index_file(key, data) if e.pack_id in listed]
        report.entries_added += index.add(entries, key)
        report.index_files_loaded += 1
    have = index.known_packs()
    found: list[PackEntry] = []
    for pid, size in listed.items():
        if pid in have:
            continue
        found += read_pack_table(backend, call, pid, size)
        report.packs_scanned += 1
    if found:
        key = None
        if write_missing:
            key, data = encode_index_file(found)
            call(lambda: backend.put(key, data))
        report.entries_added += index.add(found, key)
    return report


def list_packs(backend: Backend, call: Call) -> dict[bytes, int]:
    """Pack id → object size, from one listing."""
    out: dict[bytes, int] = {}
    for info in call(lambda: list(backend.list("packs/"))):
        pid = pack_id_from_key(info.key)
        if pid is not None:
            out[pid] = info.size
    return out


def read_pack_table(backend: Backend, call: Call, pack_id: bytes, size: int) -> list[PackEntry]:
    """Two ranged GETs: the trailer, then the chunk table."""
    key = pack_key(pack_id)
    if size < TRAILER.size:
        raise IndexCorrupt(f"{key}: {size} bytes is too small for a pack")
    raw = call(lambda: backend.get(key, size - TRAILER.size, TRAILER.size))
    table_offset, count, table_hash = parse_trailer(key, raw, size)
    table = call(lambda: backend.get(key, table_offset, count * ENTRY.size))
    return parse_table(key, pack_id, table, table_hash, table_offset)

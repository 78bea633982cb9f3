"""`pool.sqlite`'s schema, and bringing an older one up to date (docs/FORMATS.md,
"Local pool state").

The store's only index: which chunks exist, where (segment and offset, or a
chunk file of schema 1), their size, and whether they are durable in the
backend yet.
"""

from __future__ import annotations

import sqlite3

from thur.sqlbatch import require_sqlite

from .errors import PoolStateError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
    id BLOB PRIMARY KEY,
    size INTEGER NOT NULL,      -- bytes on disk: the segment record, or the chunk file
    durable INTEGER NOT NULL,   -- 0 pinned (not yet in the backend), 1 durable
    seq INTEGER NOT NULL,       -- write order, then durable order: the LRU seed
    seg INTEGER,                -- segment number; NULL: a chunk file (schema 1)
    off INTEGER                 -- the record's offset in its segment
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_state ON chunks(durable, seq);
"""
# Schema 1 had no seg/off (every chunk a file); opening one adds them (its rows
# keep NULL and their files stay readable), then creates the segment index.
SCHEMA_VERSION = "2"
SEG_INDEX = "CREATE INDEX IF NOT EXISTS chunks_by_seg ON chunks(seg, off) WHERE seg IS NOT NULL"
# Recovery merges schema 1 rows with their chunk files at every open: with this
# partial index that is a lookup, not a pass over every row of a segment-only pool.
# New chunks (seg set) never enter it, so it costs writes nothing.
FILE_INDEX = "CREATE INDEX IF NOT EXISTS chunks_in_files ON chunks(id) WHERE seg IS NULL"


def open_schema(db: sqlite3.Connection) -> None:
    """Create the schema, or migrate an older one to it (idempotent)."""
    require_sqlite()
    db.executescript(SCHEMA)
    version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    if version and version[0][0] == "1":
        db.execute("BEGIN")
        db.execute("ALTER TABLE chunks ADD COLUMN seg INTEGER")
        db.execute("ALTER TABLE chunks ADD COLUMN off INTEGER")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
        db.execute("COMMIT")
    elif version and version[0][0] != SCHEMA_VERSION:
        raise PoolStateError(
            f"pool.sqlite has schema {version[0][0]}; this Thur knows 1 and {SCHEMA_VERSION}"
        )
    db.execute("INSERT OR IGNORE INTO meta VALUES('schema_version', ?)", (SCHEMA_VERSION,))
    db.execute(SEG_INDEX)
    db.execute(FILE_INDEX)

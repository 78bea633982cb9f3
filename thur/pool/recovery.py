"""What opening the pool repairs (the write order is in store.py and docs/FORMATS.md).

- a file in tmp/ is an interrupted write: removed;
- a chunk file without a row was never acknowledged: swept;
- a durable row without a file: dropped (the backend has the chunk);
- a pinned row without a file cannot happen unless the disk lost fsync'd
  data: reported in `Recovery.lost_pinned`.

Files (`ChunkFiles.scan`, one leaf directory at a time) and rows (pages of
`_PAGE` in id order) are both streamed in id order and merged, so opening a
pool of millions of chunks does not hold them all in memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field

from .layout import ChunkFiles

_PAGE = 4096


@dataclass(slots=True)
class Recovery:
    """What opening the pool had to repair."""

    tmp_removed: int = 0
    orphans_swept: int = 0
    durable_rows_dropped: int = 0
    lost_pinned: list[bytes] = field(default_factory=list)


def _rows(db: sqlite3.Connection) -> Iterator[tuple[bytes, int]]:
    after = b""
    while True:
        page = db.execute(
            "SELECT id, durable FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (after, _PAGE)
        ).fetchall()
        if not page:
            return
        for cid, durable in page:
            yield bytes(cid), durable
        after = bytes(page[-1][0])


def recover(files: ChunkFiles, db: sqlite3.Connection) -> Recovery:
    rec = Recovery(tmp_removed=files.clear_tmp())
    missing: list[tuple[bytes, int]] = []  # rows without a file (empty unless something broke)
    rows = _rows(db)
    row = next(rows, None)
    for cid in files.scan():
        if cid is None:  # a stray file or directory, removed
            rec.orphans_swept += 1
            continue
        while row is not None and row[0] < cid:
            missing.append(row)
            row = next(rows, None)
        if row is not None and row[0] == cid:
            row = next(rows, None)
        else:  # a file without a row: never acknowledged
            files.unlink(cid)
            rec.orphans_swept += 1
    while row is not None:
        missing.append(row)
        row = next(rows, None)
    if missing:
        db.execute("BEGIN")
        for cid, durable in missing:
            db.execute("DELETE FROM chunks WHERE id = ?", (cid,))
            if durable:
                rec.durable_rows_dropped += 1
            else:
                rec.lost_pinned.append(cid)
        db.execute("COMMIT")
    return rec

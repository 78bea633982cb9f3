"""What opening the pool repairs (the write order is in store.py and docs/FORMATS.md).

- a file in tmp/ is an interrupted write: removed;
- bytes of a segment no row points at (a record never acknowledged, or
  freed just before a crash) are freed: holes punched, the tail cut off;
  a segment without rows is removed;
- a chunk file (schema 1 pools) without a row was never acknowledged: swept;
- a durable row whose bytes are missing: dropped (the backend has the chunk);
- a pinned row whose bytes are missing cannot happen unless the disk lost
  fsync'd data: reported in `Recovery.lost_pinned`.

Segments are checked one at a time against their rows (a segment holds at
most a few thousand); chunk files (`ChunkFiles.scan`, one leaf directory at
a time) and their rows (pages of `_PAGE` in id order) are streamed in id
order and merged. Opening a pool of millions of chunks does not hold them
all in memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field

from .layout import ChunkFiles
from .segments import SegmentFiles

_PAGE = 4096


@dataclass(slots=True)
class Recovery:
    """What opening the pool had to repair."""

    tmp_removed: int = 0
    orphans_swept: int = 0  # chunk files and segments without rows
    segments_trimmed: int = 0  # segments that held bytes no row points at
    durable_rows_dropped: int = 0
    lost_pinned: list[bytes] = field(default_factory=list)


def _rows(db: sqlite3.Connection) -> Iterator[tuple[bytes, int]]:
    after = b""
    while True:
        page = db.execute(
            "SELECT id, durable FROM chunks WHERE id > ? AND seg IS NULL ORDER BY id LIMIT ?",
            (after, _PAGE),
        ).fetchall()
        if not page:
            return
        for cid, durable in page:
            yield bytes(cid), durable
        after = bytes(page[-1][0])


def recover(files: ChunkFiles, segs: SegmentFiles, db: sqlite3.Connection) -> Recovery:
    rec = Recovery(tmp_removed=files.clear_tmp())
    missing: list[tuple[bytes, int]] = []  # rows without bytes (empty unless something broke)
    _recover_segments(segs, db, rec, missing)
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


def _recover_segments(
    segs: SegmentFiles, db: sqlite3.Connection, rec: Recovery, missing: list[tuple[bytes, int]]
) -> None:
    present: set[int] = set()
    for seg, length in segs.on_disk():
        present.add(seg)
        kept: list[tuple[int, int]] = []
        at = 0
        for cid, durable, off, size in db.execute(
            "SELECT id, durable, off, size FROM chunks WHERE seg = ? ORDER BY off", (seg,)
        ).fetchall():
            if off + size > length or off < at:
                missing.append((bytes(cid), durable))  # cut short, or overlapping: not ours
            else:
                kept.append((off, size))
                at = off + size
        if not kept:
            segs.drop(seg)
            rec.orphans_swept += 1
            continue
        if segs.trim(seg, kept, length):
            rec.segments_trimmed += 1
    # Rows pointing into a segment that is not there.
    for (seg,) in db.execute("SELECT DISTINCT seg FROM chunks WHERE seg IS NOT NULL").fetchall():
        if seg not in present:
            for cid, durable in db.execute(
                "SELECT id, durable FROM chunks WHERE seg = ?", (seg,)
            ).fetchall():
                missing.append((bytes(cid), durable))

"""What opening the pool repairs (the write order is in store.py and docs/FORMATS.md).

- a file in tmp/ is an interrupted write: removed;
- a chunk file without a row was never acknowledged: swept;
- a durable row without a file: dropped (the backend has the chunk);
- a pinned row without a file cannot happen unless the disk lost fsync'd
  data: reported in `Recovery.lost_pinned`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from .layout import ChunkFiles


@dataclass(slots=True)
class Recovery:
    """What opening the pool had to repair."""

    tmp_removed: int = 0
    orphans_swept: int = 0
    durable_rows_dropped: int = 0
    lost_pinned: list[bytes] = field(default_factory=list)


def recover(files: ChunkFiles, db: sqlite3.Connection) -> Recovery:
    rec = Recovery(tmp_removed=files.clear_tmp())
    on_disk, rec.orphans_swept = files.scan()
    rows = {bytes(r[0]): r[1] for r in db.execute("SELECT id, durable FROM chunks")}
    for cid in on_disk - rows.keys():
        files.unlink(cid)
        rec.orphans_swept += 1
    missing = rows.keys() - on_disk
    if missing:
        db.execute("BEGIN")
        for cid in missing:
            db.execute("DELETE FROM chunks WHERE id = ?", (cid,))
            if rows[cid]:
                rec.durable_rows_dropped += 1
            else:
                rec.lost_pinned.append(cid)
        db.execute("COMMIT")
    return rec

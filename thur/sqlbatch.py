"""Many rows per SQLite statement, for the pool's hot paths.

Python's sqlite3 lets go of the GIL around every step of a statement, and
`executemany` steps once per row. With other threads busy (two tape drives,
their put workers), each let-go is a hand-over of the GIL and back, which
cost more than the SQL itself (docs/PERFORMANCE.md, "Fewer SQLite
statements per chunk"). So lookups of many ids use one `IN (...)` per
`BATCH` ids, and inserts and updates one multi-row `VALUES` per `BATCH` parameters.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

BATCH = 500  # ids or parameters per statement: far below SQLite's variable limit (32766)
MIN_SQLITE = (3, 33, 0)  # UPDATE ... FROM (the unpin and LRU updates)


def require_sqlite(have: tuple[int, int, int] = sqlite3.sqlite_version_info) -> None:
    """Refuse to run on an SQLite too old for these statements, with a clear message."""
    if have < MIN_SQLITE:
        need = ".".join(map(str, MIN_SQLITE))
        raise RuntimeError(
            f"Thur needs SQLite {need} or newer; this Python is linked with"
            f" SQLite {'.'.join(map(str, have))} (Debian 12 and Ubuntu 22.04 have newer)"
        )


def in_lists(ids: Iterable[bytes]) -> Iterator[tuple[str, list[bytes]]]:
    """(`?,?,...`, ids) per BATCH distinct ids, for `WHERE x IN (...)`."""
    todo = list(dict.fromkeys(ids))
    for at in range(0, len(todo), BATCH):
        part = todo[at : at + BATCH]
        yield ",".join("?" * len(part)), part


def execute_values(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run `sql` over `rows`, its `{values}` replaced by `VALUES (?, ...), (?, ...)`.

    Several rows go in each statement (BATCH parameters at most); every row
    has the same width. `sql` is e.g. "INSERT OR IGNORE INTO t {values}", or
    an UPDATE ... FROM ({values}) AS v, whose columns are v.column1, v.column2...
    """
    if not rows:
        return
    width = len(rows[0])
    per = max(1, BATCH // width)
    one = "(" + ",".join("?" * width) + ")"
    for at in range(0, len(rows), per):
        part = rows[at : at + per]
        params = [v for row in part for v in row]
        db.execute(sql.format(values="VALUES " + ",".join([one] * len(part))), params)

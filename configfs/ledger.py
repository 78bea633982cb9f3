"""The ledger: exactly which kernel objects we created, persisted crash-safely.

It is the only memory we have across a daemon crash or restart, so:
- an entry is written *before* the object is created (status ``pending``) and marked
  ``done`` after it is fully configured; a crash in between leaves a pending entry,
  which the next apply recreates and teardown removes. An object we made is never
  forgotten, so it is never mistaken for someone else's;
- every change is a whole-file atomic replace (tmp + fsync + rename + fsync dir):
  a reader sees the old ledger or the new one, never half of one.

Entries hold digests of each object's settings rather than the settings themselves,
so CHAP secrets never land in this file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import LedgerError
from .paths import ObjKey

VERSION = 1
PENDING = "pending"
DONE = "done"


@dataclass(frozen=True, slots=True)
class Record:
    key: ObjKey
    status: str = PENDING
    create_digest: str = ""
    live_digest: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def hba(self) -> int | None:
        """hba index of a backstore (user_<hba>), fixed before the mkdir."""
        value = self.data.get("hba")
        return None if value is None else int(value)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key.to_json(), "status": self.status,
                "create_digest": self.create_digest, "live_digest": self.live_digest,
                "data": self.data}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Record:
        status = obj.get("status", PENDING)
        if status not in (PENDING, DONE):
            raise ValueError(f"bad status {status!r}")
        return cls(ObjKey.from_json(obj["key"]), status, str(obj.get("create_digest", "")),
                   str(obj.get("live_digest", "")), dict(obj.get("data", {})))


class Ledger:
    """Ordered records keyed by ObjKey plus a little metadata, bound to one JSON file.

    Every mutating method persists before returning.
    """

    def __init__(self, path: Path, records: list[Record] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self._records: dict[ObjKey, Record] = {r.key: r for r in records or []}
        self.meta: dict[str, Any] = dict(meta or {})

    @classmethod
    def load(cls, path: Path | str) -> Ledger:
        """Read the ledger; a missing file is an empty ledger (first start)."""
        path = Path(path)
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return cls(path)
        try:
            doc = json.loads(raw)
            if doc.get("version") != VERSION:
                raise LedgerError(f"{path}: ledger version {doc.get('version')!r} is not "
                                  f"{VERSION}; refusing to guess what it means")
            records = [Record.from_json(r) for r in doc.get("records", [])]
            meta = dict(doc.get("meta", {}))
        except LedgerError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LedgerError(f"{path}: unreadable ledger ({exc}); it lists the kernel "
                              "objects Thur created, so inspect it before deleting it") from exc
        return cls(path, records, meta)

    # -- reading ---------------------------------------------------------------------
    def get(self, key: ObjKey) -> Record | None:
        return self._records.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __iter__(self) -> Iterator[Record]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def snapshot(self) -> dict[ObjKey, Record]:
        return dict(self._records)

    # -- writing (each persists) -----------------------------------------------------
    def put(self, record: Record) -> None:
        self._records[record.key] = record
        self.save()

    def mark_done(self, key: ObjKey, **changes: Any) -> Record:
        record = replace(self._records[key], status=DONE, **changes)
        self.put(record)
        return record

    def remove(self, key: ObjKey) -> None:
        if self._records.pop(key, None) is not None:
            self.save()

    def set_meta(self, name: str, value: Any) -> None:
        if value is None:
            self.meta.pop(name, None)
        else:
            self.meta[name] = value
        self.save()

    def clear(self) -> None:
        self._records.clear()
        self.meta.clear()
        self.save()

    def save(self) -> None:
        doc = {"version": VERSION, "meta": self.meta,
               "records": [r.to_json() for r in self._records.values()]}
        atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or new file whole.

    The temp file lives in the same directory (rename is only atomic within one
    filesystem), is fsynced before the rename (else the rename can reach the disk
    before the data and leave an empty file), and the directory is fsynced after (else
    the rename itself can be lost). Mode 0600: the ledger describes our attack surface.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

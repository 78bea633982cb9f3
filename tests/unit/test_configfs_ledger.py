"""Ledger persistence: round trip, atomic replace, refusal of unknown/corrupt files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from configfs import Ledger, LedgerError
from configfs.ledger import DONE, PENDING, Record, atomic_write
from configfs.paths import Kind, ObjKey

BS = ObjKey(Kind.BACKSTORE, ("tape0",))
LUN = ObjKey(Kind.ISCSI_LUN, ("iqn.2026-01.io.thur:vtl", 1, 3))


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ledger.json"
    led = Ledger.load(path)
    assert len(led) == 0 and not path.exists()  # missing file = empty ledger
    led.put(Record(BS, PENDING, "c1", "l1", {"hba": 4}))
    led.put(Record(LUN, PENDING, "c2", "l2"))
    led.mark_done(BS)
    led.set_meta("db_root_previous", "/etc/target")
    again = Ledger.load(path)
    assert [r.key for r in again] == [BS, LUN]
    assert again.get(BS) == Record(BS, DONE, "c1", "l1", {"hba": 4})
    assert again.get(BS).hba == 4  # type: ignore[union-attr]
    assert again.get(LUN).status == PENDING  # type: ignore[union-attr]
    assert isinstance(again.get(LUN).key.ident[1], int)  # type: ignore[union-attr]
    assert again.meta == {"db_root_previous": "/etc/target"}
    assert os.stat(path).st_mode & 0o777 == 0o600
    again.remove(LUN)
    assert LUN not in Ledger.load(path)
    again.clear()
    assert len(Ledger.load(path)) == 0


def test_every_mutation_is_persisted(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    led = Ledger.load(path)
    led.put(Record(BS))
    assert BS in Ledger.load(path)  # a crash right after put() still remembers it


def test_crash_during_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.json"
    led = Ledger.load(path)
    led.put(Record(BS, DONE, "c", "l", {"hba": 1}))
    before = path.read_text()

    def boom(src: object, dst: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="power cut"):
        led.put(Record(LUN))
    monkeypatch.undo()
    assert path.read_text() == before  # old ledger intact and parseable
    assert [r.key for r in Ledger.load(path)] == [BS]
    assert not list(tmp_path.glob(".*.tmp"))  # no stray temp file


def test_atomic_write_fsyncs_file_and_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    atomic_write(tmp_path / "f.json", "{}")
    assert len(synced) == 2  # the data before the rename, the directory after it
    assert (tmp_path / "f.json").read_text() == "{}"


def test_stale_temp_file_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    (tmp_path / ".ledger.json.tmp").write_text("garbage from a crash")
    led = Ledger.load(path)
    led.put(Record(BS))
    assert BS in Ledger.load(path)


def test_unknown_version_and_corruption_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"version": 99, "records": []}))
    with pytest.raises(LedgerError, match="version 99"):
        Ledger.load(path)
    path.write_text("{not json")
    with pytest.raises(LedgerError, match="inspect it before deleting"):
        Ledger.load(path)
    path.write_text(json.dumps({"version": 1, "records": [{"key": {"kind": "nope",
                                                                    "ident": []}}]}))
    with pytest.raises(LedgerError, match="unknown object kind"):
        Ledger.load(path)

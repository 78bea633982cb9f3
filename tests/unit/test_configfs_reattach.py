"""Reattach helpers: finding the backstore and its uio device, block/reset actions."""

from __future__ import annotations

from pathlib import Path

import pytest

from configfs import (
    BackstoreNotFound,
    ExecutionError,
    Ledger,
    block_dev,
    find_uio,
    find_user_backstore,
    finish_reattach,
    prepare_reattach,
    reset_ring,
)
from configfs.direct import KernelFs
from configfs.ledger import DONE, Record
from configfs.paths import Kind, ObjKey

INFO = ("Status: ACTIVATED  Max Queue Depth: 0  SectorSize: 512  HwMaxSectors: 2048\n"
        "        Config: {cfg} Size: 1073741824 MaxDataAreaMB: 64 DataPagesPerBlk: 1 "
        "CmdRingSizeMB: 8\n")


def make_dev(root: Path, hba: int, name: str, cfg: str) -> Path:
    dev = root / "target" / "core" / f"user_{hba}" / name
    (dev / "action").mkdir(parents=True)
    (dev / "info").write_text(INFO.format(cfg=cfg))
    for action in ("block_dev", "reset_ring"):
        (dev / "action" / action).write_text("")
    return dev


class RecordingFs(KernelFs):
    def __init__(self, fail_on: str | None = None) -> None:
        self.writes: list[tuple[str, str]] = []
        self.fail_on = fail_on

    def write(self, path: Path, value: str) -> None:
        if path.name == self.fail_on:
            raise OSError(22, "Invalid argument")
        self.writes.append((path.name, value))
        super().write(path, value)


def test_find_by_name_dev_config_and_ledger(tmp_path: Path) -> None:
    make_dev(tmp_path, 3, "tape0", "thur/tape0")
    make_dev(tmp_path, 7, "tape0", "other/tape0")  # another tool's device, same name
    with pytest.raises(BackstoreNotFound, match="ambiguous"):
        find_user_backstore("tape0", root=tmp_path)
    ref = find_user_backstore("tape0", dev_config="thur/tape0", root=tmp_path)
    assert (ref.hba, ref.dev_config) == (3, "thur/tape0")
    assert ref.uio_name == "tcm-user/3/tape0/thur/tape0"
    led = Ledger(tmp_path / "ledger.json",
                 [Record(ObjKey(Kind.BACKSTORE, ("tape0",)), DONE, data={"hba": 7})])
    assert find_user_backstore("tape0", ledger=led, root=tmp_path).hba == 7
    with pytest.raises(BackstoreNotFound, match="no user backstore 'tape9'"):
        find_user_backstore("tape9", root=tmp_path)


def test_find_uio(tmp_path: Path) -> None:
    make_dev(tmp_path, 3, "tape0", "thur/tape0")
    ref = find_user_backstore("tape0", root=tmp_path)
    uio = tmp_path / "uio"
    for n, name in ((0, "tcm-user/1/changer0/thur/changer0"),
                    (1, "tcm-user/3/tape0/thur/tape0")):
        (uio / f"uio{n}").mkdir(parents=True)
        (uio / f"uio{n}" / "name").write_text(name + "\n")
    assert find_uio(ref, uio) == "uio1"
    (uio / "uio1" / "name").write_text("tcm-user/9/tape0/thur/tape0\n")
    with pytest.raises(BackstoreNotFound, match="other hba: uio1=tcm-user/9"):
        find_uio(ref, uio)


def test_reattach_sequence(tmp_path: Path) -> None:
    dev = make_dev(tmp_path, 3, "tape0", "thur/tape0")
    ref = find_user_backstore("tape0", root=tmp_path)
    fs = RecordingFs()
    prepare_reattach(ref, fs=fs)
    finish_reattach(ref, fs=fs)
    assert fs.writes == [("block_dev", "1"), ("reset_ring", "2"), ("block_dev", "0")]
    assert (dev / "action" / "block_dev").read_text() == "0"
    with pytest.raises(ValueError, match="1 or 2"):
        reset_ring(ref, 3, fs=fs)
    block_dev(ref, True, fs=fs)
    assert fs.writes[-1] == ("block_dev", "1")


def test_failed_reset_unblocks(tmp_path: Path) -> None:
    make_dev(tmp_path, 3, "tape0", "thur/tape0")
    ref = find_user_backstore("tape0", root=tmp_path)
    fs = RecordingFs(fail_on="reset_ring")
    with pytest.raises(ExecutionError, match="reset_ring: Invalid argument"):
        prepare_reattach(ref, fs=fs)
    assert fs.writes == [("block_dev", "1"), ("block_dev", "0")]

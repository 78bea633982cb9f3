"""Direct configfs helpers against a temp dir that emulates configfs semantics."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from configfs import ExecutionError, TargetState, UserBackstore
from configfs.direct import (
    KernelFs,
    allocate_hba,
    create_user_backstore,
    delete_user_backstore,
    ensure_db_root,
    remove_object,
    restore_db_root,
)
from configfs.ledger import Record
from configfs.lio import LioExecutor
from configfs.paths import ConfigfsPaths, Kind, ObjKey, object_path
from configfs.plan import Node, desired_nodes

# Directories configfs creates by itself inside an object (they vanish with it).
DEFAULT_GROUPS = {"attrib", "param", "auth", "lun", "np", "acls", "wwn", "pr", "alua",
                  "action", "statistics", "fabric_statistics"}


class EmuFs(KernelFs):
    """Records writes; rmdir behaves like configfs: attribute files and default groups
    go with the directory, but a child object (any other subdir) makes it ENOTEMPTY."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []
        self.reject: dict[str, int] = {}  # value -> errno

    def write(self, path: Path, value: str) -> None:
        if value in self.reject:
            raise OSError(self.reject[value], os.strerror(self.reject[value]))
        self.writes.append((str(path), value))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)

    def rmdir(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "gone", str(path))
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink() and (
                    child.name not in DEFAULT_GROUPS
                    or any(c.is_dir() for c in child.iterdir())):
                raise OSError(errno.ENOTEMPTY, "Directory not empty", str(path))
        shutil.rmtree(path)


def make_bs(**kw: object) -> UserBackstore:
    args: dict[str, object] = {"name": "tape0", "dev_config": "thur/tape0",
                               "size_bytes": 1 << 30, "wwn_serial": "SN0",
                               "cmd_time_out": 14400, "cmd_ring_size_mb": 8}
    args.update(kw)
    return UserBackstore(**args)  # type: ignore[arg-type]


@pytest.fixture
def paths(tmp_path: Path) -> ConfigfsPaths:
    p = ConfigfsPaths(tmp_path / "config")
    p.core.mkdir(parents=True)
    return p


def node_of(bs: UserBackstore, tmp_path: Path) -> Node:
    st = TargetState(db_root=tmp_path / "db", backstores=[bs])
    return desired_nodes(st)[0]


def test_allocate_hba(paths: ConfigfsPaths) -> None:
    assert allocate_hba(paths) == 0
    for d in ("fileio_0", "user_1", "iblock_3", "alua"):
        (paths.core / d).mkdir()
    assert allocate_hba(paths) == 2


def test_create_user_backstore_write_order(paths: ConfigfsPaths, tmp_path: Path) -> None:
    db_root = tmp_path / "db"
    (db_root / "pr").mkdir(parents=True)
    (db_root / "pr" / "aptpl_SN0").write_text(
        "PR_REG_START: 0\ninitiator_fabric=iSCSI\nsa_res_key=7\nPR_REG_END: 0\n")
    node = node_of(make_bs(), tmp_path)
    fs = EmuFs()
    dev = create_user_backstore(fs, paths, 3, "tape0", node.create, node.live, db_root)
    assert dev == paths.core / "user_3" / "tape0"
    rel = [(str(Path(p).relative_to(dev)), v) for p, v in fs.writes]
    assert rel == [
        ("control", "dev_config=thur/tape0"),
        ("control", "dev_size=1073741824"),
        ("control", "hw_block_size=512"),
        ("control", "hw_max_sectors=2048"),
        ("control", "nl_reply_supported=-1"),
        ("control", "max_data_area_mb=64"),
        ("control", "cmd_ring_size_mb=8"),
        ("enable", "1"),
        ("wwn/vpd_unit_serial", "SN0"),
        ("pr/res_aptpl_metadata", "initiator_fabric=iSCSI,sa_res_key=7"),
        ("attrib/cmd_time_out", "14400"),
        ("attrib/qfull_time_out", "-1"),
        ("attrib/tmr_notification", "1"),
    ]


def test_rejected_control_option_is_named(paths: ConfigfsPaths, tmp_path: Path) -> None:
    node = node_of(make_bs(), tmp_path)
    fs = EmuFs()
    fs.reject["cmd_ring_size_mb=8"] = errno.EINVAL
    with pytest.raises(ExecutionError, match="rejected control option 'cmd_ring_size_mb=8'"):
        create_user_backstore(fs, paths, 0, "tape0", node.create, node.live, None)


def test_delete_user_backstore(paths: ConfigfsPaths) -> None:
    fs = EmuFs()
    for name in ("tape0", "tape1"):
        (paths.core / "user_2" / name / "attrib").mkdir(parents=True)
    delete_user_backstore(fs, paths, 2, "tape0")
    assert (paths.core / "user_2").is_dir()  # tape1 still lives in that hba
    delete_user_backstore(fs, paths, 2, "tape1")
    assert not (paths.core / "user_2").exists()
    delete_user_backstore(fs, paths, 2, "tape1")  # already gone: fine


def test_remove_lun_unlinks_then_rmdirs(paths: ConfigfsPaths) -> None:
    dev = paths.core / "user_0" / "tape0"
    dev.mkdir(parents=True)
    lun = paths.iscsi / "iqn.2026-01.io.thur:vtl" / "tpgt_1" / "lun" / "lun_0"
    lun.mkdir(parents=True)
    (lun / "tape0").symlink_to(dev)
    fs = EmuFs()
    remove_object(fs, Kind.ISCSI_LUN, lun)
    assert not lun.exists() and dev.is_dir()  # the backstore is untouched
    remove_object(fs, Kind.ISCSI_LUN, lun)  # already gone: fine


def test_remove_tpg_disables_first_and_refuses_foreign_children(paths: ConfigfsPaths) -> None:
    tpg = paths.iscsi / "iqn.2026-01.io.thur:vtl" / "tpgt_1"
    for group in ("lun", "np", "acls", "attrib"):
        (tpg / group).mkdir(parents=True)
    (tpg / "enable").write_text("1")
    (tpg / "lun" / "lun_5").mkdir()  # someone else's LUN inside our TPG
    fs = EmuFs()
    with pytest.raises(ExecutionError, match="did not create: lun/lun_5"):
        remove_object(fs, Kind.ISCSI_TPG, tpg)
    assert (str(tpg / "enable"), "0") in fs.writes
    assert tpg.is_dir()
    (tpg / "lun" / "lun_5").rmdir()
    remove_object(fs, Kind.ISCSI_TPG, tpg)
    assert not tpg.exists()


def test_db_root(paths: ConfigfsPaths, tmp_path: Path) -> None:
    fs = EmuFs()
    db = tmp_path / "data" / "lio"
    res = ensure_db_root(fs, paths, db)
    assert "does not exist" in (res.warning or "")  # kernel without dbroot: warn only
    assert (db / "pr").is_dir() and (db / "alua").is_dir()
    paths.dbroot.write_text("/etc/target\n")
    assert ensure_db_root(fs, paths, db).previous == "/etc/target"
    assert paths.dbroot.read_text() == f"{db}\n"  # newline: see dbroot_value
    fs.writes.clear()
    assert ensure_db_root(fs, paths, db).previous is None
    assert fs.writes == []  # already ours: not even written
    assert restore_db_root(fs, paths, "/etc/target", db) is None
    assert paths.dbroot.read_text() == "/etc/target\n"
    assert restore_db_root(fs, paths, "/var/target", db) is None  # not ours: left alone
    assert paths.dbroot.read_text() == "/etc/target\n"


def test_a_shared_db_root_stays_while_another_daemons_backstores_use_it(
    paths: ConfigfsPaths, tmp_path: Path
) -> None:
    fs = EmuFs()
    db = tmp_path / "shared" / "lio"
    paths.dbroot.write_text("/etc/target\n")
    assert ensure_db_root(fs, paths, db).previous == "/etc/target"
    (paths.core / "user_1" / "thurvsa_vol1").mkdir(parents=True)  # the other daemon's
    assert restore_db_root(fs, paths, "/etc/target", db) is None
    assert paths.dbroot.read_text() == f"{db}\n"


def test_object_paths(paths: ConfigfsPaths) -> None:
    iqn, init = "iqn.2026-01.io.thur:vtl", "iqn.1993-08.org.debian:01:a"
    t = paths.target
    cases = {
        ObjKey(Kind.ISCSI_PORTAL, (iqn, 1, "[::1]:3260")): f"iscsi/{iqn}/tpgt_1/np/[::1]:3260",
        ObjKey(Kind.ISCSI_MAPPED_LUN, (iqn, 1, init, 2)): f"iscsi/{iqn}/tpgt_1/acls/{init}/lun_2",
        ObjKey(Kind.LOOP_LUN, ("naa.5001405000000001", 1, 0)):
            "loopback/naa.5001405000000001/tpgt_1/lun/lun_0",
    }
    for key, rel in cases.items():
        assert object_path(key, paths) == t / rel
    assert object_path(ObjKey(Kind.BACKSTORE, ("tape0",)), paths, 4) == t / "core/user_4/tape0"
    assert object_path(ObjKey(Kind.BACKSTORE, ("tape0",)), paths) is None


def test_executor_exists_and_delete(paths: ConfigfsPaths) -> None:
    fs = EmuFs()
    ex = LioExecutor(paths, fs)
    bs_key = ObjKey(Kind.BACKSTORE, ("tape0",))
    rec = Record(bs_key, data={"hba": 1})
    assert not ex.exists(bs_key, rec)
    (paths.core / "user_1" / "tape0").mkdir(parents=True)
    assert ex.exists(bs_key, rec)
    assert not ex.exists(bs_key, None)  # without our record it is not ours to find
    ex.delete(rec)
    assert not (paths.core / "user_1").exists()

    disc = ObjKey(Kind.DISCOVERY_AUTH, ())
    d = paths.discovery_auth
    d.mkdir(parents=True)
    for name, value in (("enforce_discovery_auth", "0"), ("userid", "NULL")):
        (d / name).write_text(value + "\n")
    assert not ex.exists(disc, None)
    (d / "userid").write_text("someone\n")
    assert ex.exists(disc, None)
    ex.delete(Record(disc))
    assert (d / "userid").read_text() == "NULL"
    assert (d / "enforce_discovery_auth").read_text() == "0"


def test_executor_refuses_rtslib_on_a_foreign_root(paths: ConfigfsPaths) -> None:
    # rtslib keeps its root in a class attribute; we never rebind it under other users
    ex = LioExecutor(paths, EmuFs())
    with pytest.raises(ExecutionError, match="rtslib-fb works on /sys/kernel/config/target"):
        ex.enable(ObjKey(Kind.ISCSI_TPG, ("iqn.2026-01.io.thur:vtl", 1)))


def test_two_daemons_picking_the_same_hba_share_it(paths: ConfigfsPaths, tmp_path: Path) -> None:
    # thurvsad's device made user_0 after thurvtld chose index 0 for its own.
    (paths.core / "user_0" / "thurvsa_vol1").mkdir(parents=True)
    node = node_of(make_bs(), tmp_path)
    dev = create_user_backstore(EmuFs(), paths, 0, "tape0", node.create, node.live, None)
    assert dev == paths.core / "user_0" / "tape0" and dev.is_dir()
    assert (paths.core / "user_0" / "thurvsa_vol1").is_dir()


class VanishingHbaFs(EmuFs):
    """The other daemon removes the shared hba (its last device went) just after our
    hba mkdir found it there, once."""

    def __init__(self) -> None:
        super().__init__()
        self.vanish = True

    def mkdir(self, path: Path) -> None:
        if path.name.startswith("user_") and path.is_dir() and self.vanish:
            self.vanish = False
            path.rmdir()
            raise FileExistsError(errno.EEXIST, "File exists", str(path))
        super().mkdir(path)


def test_an_hba_removed_under_our_feet_is_made_again(paths: ConfigfsPaths, tmp_path: Path) -> None:
    (paths.core / "user_0").mkdir()
    node = node_of(make_bs(), tmp_path)
    fs = VanishingHbaFs()
    dev = create_user_backstore(fs, paths, 0, "tape0", node.create, node.live, None)
    assert not fs.vanish and dev.is_dir()


class CrowdedRmdirFs(EmuFs):
    """Another daemon creates a device in the hba between our listing and its rmdir."""

    def rmdir(self, path: Path) -> None:
        if path.name.startswith("user_"):
            (path / "thurvsa_vol1").mkdir()
        super().rmdir(path)


def test_deleting_leaves_an_hba_another_daemon_just_used(paths: ConfigfsPaths) -> None:
    (paths.core / "user_2" / "tape0" / "attrib").mkdir(parents=True)
    delete_user_backstore(CrowdedRmdirFs(), paths, 2, "tape0")
    assert (paths.core / "user_2" / "thurvsa_vol1").is_dir()
    assert not (paths.core / "user_2" / "tape0").exists()

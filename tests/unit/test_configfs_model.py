"""Desired-state validation: every rule fails with a message naming field and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from configfs import (
    Chap,
    IscsiTarget,
    LoopbackTarget,
    Lun,
    MappedLun,
    NodeAcl,
    Portal,
    StateError,
    TargetState,
    UserBackstore,
)

IQN = "iqn.2026-01.io.thur:vtl"
INIT = "iqn.1993-08.org.debian:01:abcdef"


def bs(name: str = "tape0", **kw: object) -> UserBackstore:
    args: dict[str, object] = {"name": name, "dev_config": f"thur/{name}",
                               "size_bytes": 1 << 30, "wwn_serial": f"SN-{name}"}
    args.update(kw)
    return UserBackstore(**args)  # type: ignore[arg-type]


def test_valid_backstore_defaults() -> None:
    b = bs(cmd_time_out=4 * 3600)
    assert b.tmr_notification is True
    assert b.hw_block_size == 512


@pytest.mark.parametrize(("kw", "fragment"), [
    ({"name": "bad/name"}, "name must be"),
    ({"name": ""}, "name must be"),
    ({"dev_config": "noslash"}, "dev_config"),
    ({"dev_config": "thur/a,b"}, "no ','"),
    ({"dev_config": "thur/a:b"}, "dev_config"),
    ({"wwn_serial": "a/b"}, "APTPL"),
    ({"hw_block_size": 1000}, "power of two"),
    ({"size_bytes": 1000}, "size_bytes"),
    ({"size_bytes": 512 * 3 + 1}, "not a multiple of hw_block_size"),
    ({"hw_max_sectors": 0}, "hw_max_sectors"),
    ({"max_data_area_mb": 1, "hw_max_sectors": 4096}, "exceeds max_data_area_mb"),
    ({"max_data_area_mb": 0}, "max_data_area_mb"),
    ({"data_pages_per_blk": 0}, "data_pages_per_blk"),
    ({"cmd_time_out": -1}, "cmd_time_out"),
    ({"qfull_time_out": -2}, "qfull_time_out"),
    ({"cmd_time_out": True}, "cmd_time_out"),
    ({"tmr_notification": 1}, "tmr_notification must be a bool"),
])
def test_backstore_rules(kw: dict[str, object], fragment: str) -> None:
    with pytest.raises(StateError, match="backstore") as exc:
        bs(**kw)
    assert fragment in str(exc.value)


def test_chap_rules() -> None:
    Chap("user", "secret123456")
    Chap("user", "secret123456", "tgt", "other-secret99")
    with pytest.raises(StateError, match="chap.password"):
        Chap("user", "has space")
    with pytest.raises(StateError, match="NULL"):
        Chap("NULL", "secret123456")
    with pytest.raises(StateError, match="needs both"):
        Chap("user", "secret123456", "tgt", None)
    with pytest.raises(StateError, match="must differ"):
        Chap("user", "secret123456", "tgt", "secret123456")
    assert "secret" not in repr(Chap("user", "secret123456"))


@pytest.mark.parametrize("name", [
    "iqn.2026-01.io.thur:vtl", "iqn.2003-01.org.linux-iscsi.host.x8664:sn.1234",
    "eui.0123456789abcdef",
])
def test_good_iscsi_names(name: str) -> None:
    IscsiTarget(iqn=name, portals=[], luns=[])


@pytest.mark.parametrize("name", [
    "iqn.2026-13.io.thur:vtl", "IQN.2026-01.io.thur", "iqn.2026-01.io.thur:Upper",
    "iqn.2026-01.io_thur", "iqn.26-01.io.thur", "eui.0123", "naa.5001405000000001",
    "iqn.2026-01.thur:one-label", "iqn.2026-01.io..thur",
])
def test_bad_iscsi_names(name: str) -> None:
    with pytest.raises(StateError, match="not an iSCSI name"):
        IscsiTarget(iqn=name, portals=[], luns=[])


def test_portal_normalisation_and_rules() -> None:
    t = IscsiTarget(iqn=IQN, portals=[("127.0.0.1", 3260), ("[::1]", 3261)], luns=[])
    assert t.portals == (Portal("127.0.0.1", 3260), Portal("::1", 3261))
    assert t.portals[1].configfs_name == "[::1]:3261"
    with pytest.raises(StateError, match="not an IPv4 or IPv6"):
        Portal("host.example", 3260)
    with pytest.raises(StateError, match=r"1\.\.65535"):
        Portal("0.0.0.0", 0)
    with pytest.raises(StateError, match="duplicate portal"):
        IscsiTarget(iqn=IQN, portals=[("10.0.0.1", 3260), ("10.0.0.1", 3260)], luns=[])


def test_lun_rules() -> None:
    with pytest.raises(StateError, match=r"0\.\.65535"):
        Lun(65536, "tape0")
    with pytest.raises(StateError, match="duplicate LUN number"):
        IscsiTarget(iqn=IQN, portals=[], luns=[(0, "a"), (0, "b")])
    with pytest.raises(StateError, match="unknown backstore 'nope'"):
        TargetState(db_root=Path("/d"), backstores=[bs()],
                    iscsi_targets=[IscsiTarget(iqn=IQN, portals=[], luns=[(0, "nope")])])


def test_demo_and_acl_modes() -> None:
    demo = IscsiTarget(iqn=IQN, portals=[], luns=[(0, "tape0")])
    assert demo.demo_mode is True
    acl = IscsiTarget(iqn=IQN, portals=[], luns=[(0, "tape0"), (3, "tape0")],
                      acls=[NodeAcl(INIT)])
    assert acl.demo_mode is False
    # mapped_luns=None maps every LUN under its own number
    assert acl.mapped_luns_of(acl.acls[0]) == (MappedLun(0, 0), MappedLun(3, 3))
    with pytest.raises(StateError, match="exclusive"):
        IscsiTarget(iqn=IQN, portals=[], luns=[], acls=[NodeAcl(INIT)], demo_mode=True)
    with pytest.raises(StateError, match="tpg_lun 7"):
        IscsiTarget(iqn=IQN, portals=[], luns=[(0, "t")],
                    acls=[NodeAcl(INIT, mapped_luns=[(0, 7)])])
    with pytest.raises(StateError, match="duplicate mapped LUN"):
        NodeAcl(INIT, mapped_luns=[(0, 0), (0, 1)])
    with pytest.raises(StateError, match="not an iSCSI name"):
        NodeAcl("initiator")


def test_authentication_rules() -> None:
    chap = Chap("user", "secret123456")
    IscsiTarget(iqn=IQN, portals=[], luns=[], authentication=True, chap=chap)
    with pytest.raises(StateError, match="needs TPG chap"):
        IscsiTarget(iqn=IQN, portals=[], luns=[], authentication=True)
    with pytest.raises(StateError, match="authentication is off"):
        IscsiTarget(iqn=IQN, portals=[], luns=[], chap=chap)
    with pytest.raises(StateError, match="put credentials on each NodeAcl"):
        IscsiTarget(iqn=IQN, portals=[], luns=[], acls=[NodeAcl(INIT)], chap=chap,
                    authentication=True)
    with pytest.raises(StateError, match="has no chap"):
        IscsiTarget(iqn=IQN, portals=[], luns=[], acls=[NodeAcl(INIT)], authentication=True)
    with pytest.raises(StateError, match="has chap but authentication is off"):
        IscsiTarget(iqn=IQN, portals=[], luns=[], acls=[NodeAcl(INIT, chap=chap)])


def test_loopback_rules() -> None:
    LoopbackTarget(wwn="naa.5001405000000001", luns=[(0, "tape0")],
                   nexus_wwn="naa.5001405000000002")
    with pytest.raises(StateError, match="not a NAA WWN"):
        LoopbackTarget(wwn="naa.6001405000000001", luns=[])  # rtslib would rewrite 6 -> 5
    with pytest.raises(StateError, match="not a NAA WWN"):
        LoopbackTarget(wwn="naa.5001405", luns=[])
    with pytest.raises(StateError, match="nexus_wwn"):
        LoopbackTarget(wwn="naa.5001405000000001", luns=[], nexus_wwn="iqn.2026-01.x.y")


def test_state_uniqueness_and_db_root() -> None:
    with pytest.raises(StateError, match="absolute"):
        TargetState(db_root=Path("rel/dir"))
    with pytest.raises(StateError, match="duplicate backstore name"):
        TargetState(db_root=Path("/d"), backstores=[bs(), bs()])
    with pytest.raises(StateError, match="duplicate backstore wwn_serial"):
        TargetState(db_root=Path("/d"), backstores=[bs("a", wwn_serial="X"),
                                                    bs("b", wwn_serial="X")])
    t = IscsiTarget(iqn=IQN, portals=[], luns=[])
    with pytest.raises(StateError, match="duplicate iSCSI target"):
        TargetState(db_root=Path("/d"), iscsi_targets=[t, t])


def test_states_compare_by_value() -> None:
    a = TargetState(db_root="/d", backstores=[bs()],  # type: ignore[arg-type]
                    iscsi_targets=[IscsiTarget(iqn=IQN, portals=[("127.0.0.1", 3260)],
                                               luns=[(0, "tape0")])])
    b = TargetState(db_root=Path("/d"), backstores=(bs(),),
                    iscsi_targets=(IscsiTarget(iqn=IQN, portals=(Portal("127.0.0.1"),),
                                               luns=(Lun(0, "tape0"),)),))
    assert a == b
    assert hash(a) == hash(b)

"""The rtslib-backed executor, with rtslib replaced by a recorder (no kernel here).

Checks which rtslib classes are built with which arguments and modes, and that the
user backstores bypass rtslib entirely (direct writes into the temp configfs).
"""

from __future__ import annotations

import shutil
import types
from pathlib import Path
from typing import Any

from configfs import (
    Chap,
    IscsiTarget,
    Ledger,
    LoopbackTarget,
    NodeAcl,
    TargetState,
    UserBackstore,
    apply,
    teardown,
)
from configfs.direct import KernelFs
from configfs.lio import LioExecutor
from configfs.paths import ConfigfsPaths

IQN = "iqn.2026-01.io.thur:vtl"
INIT = "iqn.1993-08.org.debian:01:abcdef"
NAA = "naa.5001405000000001"
NEXUS = "naa.5001405000000002"


class MkdirFs(KernelFs):
    """Parents appear as needed (the fake rtslib below makes no directories)."""

    def mkdir(self, path: Path) -> None:
        path.mkdir(parents=True)

    def rmdir(self, path: Path) -> None:
        # configfs: attribute files and default groups vanish with the directory
        assert not any(c.is_dir() and c.name not in ("attrib", "wwn", "pr") for c in
                       path.iterdir()), f"child objects left in {path}"
        shutil.rmtree(path)

    def write(self, path: Path, value: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().write(path, value)


def fake_rtslib(calls: list[tuple[Any, ...]]) -> types.SimpleNamespace:
    class RTSLibError(Exception):
        pass

    class Obj:
        def __init__(self, *args: Any, **kw: Any) -> None:
            calls.append((type(self).__name__, *[_show(a) for a in args],
                          *sorted((k, _show(v)) for k, v in kw.items())))

        def __setattr__(self, name: str, value: Any) -> None:
            calls.append(("set", type(self).__name__, name, value))
            object.__setattr__(self, name, value)

        def set_attribute(self, name: str, value: str) -> None:
            calls.append(("attr", type(self).__name__, name, value))

    def _show(a: Any) -> Any:
        return type(a).__name__ if isinstance(a, Obj) else a

    classes = {n: type(n, (Obj,), {}) for n in (
        "FabricModule", "Target", "TPG", "LUN", "NodeACL", "MappedLUN", "NetworkPortal",
        "UserBackedStorageObject")}
    return types.SimpleNamespace(RTSLibError=RTSLibError, **classes)


def test_apply_and_teardown_through_the_executor(tmp_path: Path) -> None:
    root = tmp_path / "config"
    (root / "target" / "core").mkdir(parents=True)
    (root / "target" / "dbroot").write_text("/var/target\n")
    state = TargetState(
        db_root=tmp_path / "db",
        backstores=[UserBackstore(name="tape0", dev_config="thur/tape0", size_bytes=1 << 30,
                                  wwn_serial="SN0", cmd_time_out=14400)],
        iscsi_targets=[IscsiTarget(iqn=IQN, portals=[("::1", 3260)], luns=[(0, "tape0")],
                                   authentication=True,
                                   acls=[NodeAcl(INIT, chap=Chap("u", "secret123456"))])],
        loopback_targets=[LoopbackTarget(wwn=NAA, luns=[(0, "tape0")], nexus_wwn=NEXUS)],
        discovery_auth=Chap("d", "discovery-secret"),
    )
    calls: list[tuple[Any, ...]] = []
    fs = MkdirFs()
    ex = LioExecutor(ConfigfsPaths(root), fs, state.db_root)
    ex._rts = fake_rtslib(calls)  # type: ignore[assignment]
    led = Ledger.load(tmp_path / "ledger.json")
    apply(state, led, root=root, executor=ex, fs=fs)

    # the backstore is ours, written directly: rtslib never creates or deletes one
    dev = root / "target" / "core" / "user_0" / "tape0"
    assert (dev / "attrib" / "cmd_time_out").read_text() == "14400"
    assert (dev / "wwn" / "vpd_unit_serial").read_text() == "SN0"
    built = [c for c in calls if c[0] not in ("set", "attr")]
    assert ("UserBackedStorageObject", "tape0", ("index", 0)) in built
    assert not any(c[0] == "UserBackedStorageObject" and len(c) > 3 for c in built)
    # create mode for every object we make; lookup for parents
    assert ("Target", "FabricModule", IQN, ("mode", "create")) in built
    assert ("TPG", "Target", 1, ("mode", "create")) in built
    assert ("NodeACL", "TPG", INIT, ("mode", "create")) in built
    assert ("NetworkPortal", "TPG", "[::1]", 3260, ("mode", "create")) in built
    assert ("LUN", "TPG", 0, ("alias", "tape0"), ("storage_object", "UserBackedStorageObject")) \
        in built
    assert ("MappedLUN", "NodeACL", 0, ("tpg_lun", 0), ("write_protect", False)) in built
    assert ("Target", "FabricModule", NAA, ("mode", "create")) in built
    assert ("TPG", "Target", 1, ("mode", "lookup")) in built
    # the loop TPG was made by hand so the chosen nexus is written before rtslib sees it
    assert (root / "target" / "loopback" / NAA / "tpgt_1" / "nexus").read_text() == NEXUS
    settings = [c for c in calls if c[0] in ("set", "attr")]
    assert ("attr", "TPG", "generate_node_acls", "0") in settings
    assert ("attr", "TPG", "authentication", "1") in settings
    assert ("set", "NodeACL", "chap_userid", "u") in settings
    assert ("set", "NodeACL", "chap_password", "secret123456") in settings
    assert ("set", "FabricModule", "discovery_enable_auth", True) in settings
    assert settings[-1] == ("set", "TPG", "enable", True)  # enabled last

    # teardown removes by path (rmdir), never through rtslib's recursive deletes
    calls.clear()
    teardown(led, root=root, executor=ex, fs=fs)
    assert calls == []
    assert not dev.exists()
    assert len(led) == 0

"""The executor: turns one planned operation into kernel changes.

Thin on purpose. Fabric objects (targets, TPGs, LUNs, ACLs, mapped LUNs, portals,
discovery auth, tcm_loop nexus) are created and configured with rtslib-fb in
'create' mode (so an object that appeared behind our back is an error, not silently
adopted). User backstores, existence checks and removals are direct configfs I/O
(see direct.py for why).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .direct import (
    KernelFs,
    allocate_hba,
    create_user_backstore,
    delete_user_backstore,
    remove_object,
    update_user_backstore,
)
from .errors import ExecutionError
from .ledger import Ledger, Record
from .nvmet import NvmetOps
from .paths import ConfigfsPaths, Kind, ObjKey, object_path
from .plan import Node

if TYPE_CHECKING:  # rtslib-fb imports pyudev at import time; keep it out of unit tests
    from types import ModuleType


class Executor(Protocol):
    """What apply()/teardown() need from the kernel side (a fake in unit tests)."""

    def exists(self, key: ObjKey, record: Record | None) -> bool: ...
    def allocate(self, node: Node) -> dict[str, Any]: ...
    def create(self, node: Node, record: Record, ledger: Ledger) -> None: ...
    def update(self, node: Node, record: Record, ledger: Ledger) -> None: ...
    def delete(self, record: Record) -> None: ...
    def enable(self, key: ObjKey) -> None: ...


_CHAP_ATTRS = ("userid", "password", "mutual_userid", "mutual_password")


def _is_nvmet(key: ObjKey) -> bool:
    return key.kind.label.startswith("nvmet_")


class LioExecutor:
    def __init__(self, paths: ConfigfsPaths | None = None, fs: KernelFs | None = None,
                 db_root: Path | None = None) -> None:
        self.paths = paths or ConfigfsPaths()
        self.fs = fs or KernelFs()
        self.db_root = db_root
        self.nvmet = NvmetOps(self.paths, self.fs)
        self._rts: ModuleType | None = None

    # -- probing (plain configfs reads) ----------------------------------------------
    def exists(self, key: ObjKey, record: Record | None) -> bool:
        if _is_nvmet(key):
            return self.nvmet.exists(key, record)
        if key.kind is Kind.DISCOVERY_AUTH:
            return self._discovery_configured()
        hba = record.hba if record is not None else None
        path = object_path(key, self.paths, hba)
        return path is not None and path.is_dir()

    def _discovery_configured(self) -> bool:
        # Not an object, a fabric-wide setting: "exists" means someone configured it.
        d = self.paths.discovery_auth
        try:
            enforce = self.fs.read(d / "enforce_discovery_auth").strip() == "1"
            userid = self.fs.read(d / "userid").strip()
        except OSError:
            return False
        return enforce or userid not in ("", "NULL")

    def allocate(self, node: Node) -> dict[str, Any]:
        if _is_nvmet(node.key):
            return self.nvmet.allocate(node)
        if node.key.kind is Kind.BACKSTORE:
            return {"hba": allocate_hba(self.paths)}
        return {}

    # -- operations ------------------------------------------------------------------
    def create(self, node: Node, record: Record, ledger: Ledger) -> None:
        key, kind = node.key, node.key.kind
        if _is_nvmet(key):
            self.nvmet.create(node, record, ledger)
            return
        if kind is Kind.BACKSTORE:
            if record.hba is None:
                raise ExecutionError(f"{key}: no hba index recorded")
            create_user_backstore(self.fs, self.paths, record.hba, str(key.ident[0]),
                                  node.create, node.live, self.db_root)
            return
        rts = self._rtslib()
        try:
            if kind is Kind.DISCOVERY_AUTH:
                self.update(node, record, ledger)
            elif kind is Kind.ISCSI_TARGET:
                rts.Target(rts.FabricModule("iscsi"), key.ident[0], mode="create")
            elif kind is Kind.ISCSI_TPG:
                rts.TPG(self._target(key), int(key.ident[1]), mode="create")
                self.update(node, record, ledger)  # attributes + CHAP; enable comes last
            elif kind in (Kind.ISCSI_LUN, Kind.LOOP_LUN):
                name = str(node.create["backstore"])
                so = rts.UserBackedStorageObject(name, index=self._hba_of(name, ledger))
                rts.LUN(self._tpg(key), int(key.ident[2]), storage_object=so, alias=name)
            elif kind is Kind.ISCSI_ACL:
                rts.NodeACL(self._tpg(key), key.ident[2], mode="create")
                self.update(node, record, ledger)
            elif kind is Kind.ISCSI_MAPPED_LUN:
                rts.MappedLUN(self._acl(key), int(key.ident[3]),
                              tpg_lun=int(node.create["tpg_lun"]),
                              write_protect=bool(node.live["write_protect"]))
            elif kind is Kind.ISCSI_PORTAL:
                ip = str(node.create["ip"])
                rts.NetworkPortal(self._tpg(key), f"[{ip}]" if ":" in ip else ip,
                                  int(node.create["port"]), mode="create")
            elif kind is Kind.LOOP_TARGET:
                rts.Target(rts.FabricModule("loopback"), key.ident[0], mode="create")
            elif kind is Kind.LOOP_TPG:
                self._create_loop_tpg(key, str(node.create["nexus"]))
            else:
                raise AssertionError(kind)
        except (rts.RTSLibError, OSError) as exc:
            raise ExecutionError(f"cannot create {key}: {exc}") from exc

    def update(self, node: Node, record: Record, ledger: Ledger) -> None:
        key, kind = node.key, node.key.kind
        if _is_nvmet(key):
            self.nvmet.update(node, record, ledger)
            return
        if kind is Kind.BACKSTORE:
            path = object_path(key, self.paths, record.hba)
            assert path is not None
            update_user_backstore(self.fs, path, node.live)
            return
        rts = self._rtslib()
        try:
            if kind is Kind.DISCOVERY_AUTH:
                fm = rts.FabricModule("iscsi")
                for attr in _CHAP_ATTRS:
                    setattr(fm, f"discovery_{attr}", node.live[attr])
                fm.discovery_enable_auth = True
            elif kind is Kind.ISCSI_TPG:
                tpg = self._tpg(key)
                self._set_chap(tpg, node.live["chap"], key)
                for attr, value in node.live["attributes"].items():
                    tpg.set_attribute(attr, value)
            elif kind is Kind.ISCSI_ACL:
                self._set_chap(self._acl(key), node.live["chap"], key)
            elif kind is Kind.ISCSI_MAPPED_LUN:
                rts.MappedLUN(self._acl(key), int(key.ident[3])).write_protect = \
                    bool(node.live["write_protect"])
            # other kinds have no live settings
        except (rts.RTSLibError, OSError) as exc:
            raise ExecutionError(f"cannot configure {key}: {exc}") from exc

    def delete(self, record: Record) -> None:
        key, kind = record.key, record.key.kind
        if _is_nvmet(key):
            self.nvmet.delete(record)
        elif kind is Kind.BACKSTORE:
            if record.hba is not None:
                delete_user_backstore(self.fs, self.paths, record.hba, str(key.ident[0]))
        elif kind is Kind.DISCOVERY_AUTH:
            d = self.paths.discovery_auth
            if d.is_dir():
                # Back to the kernel defaults: enforcement off, credentials unset.
                self.fs.write(d / "enforce_discovery_auth", "0")
                for name in ("userid", "password", "userid_mutual", "password_mutual"):
                    self.fs.write(d / name, "NULL")
        else:
            path = object_path(key, self.paths)
            assert path is not None
            remove_object(self.fs, kind, path)

    def enable(self, key: ObjKey) -> None:
        rts = self._rtslib()
        try:
            self._tpg(key).enable = True
        except (rts.RTSLibError, OSError) as exc:
            raise ExecutionError(f"cannot enable {key}: {exc}") from exc

    # -- helpers ---------------------------------------------------------------------
    def _rtslib(self) -> ModuleType:
        if self._rts is None:
            import rtslib_fb

            bound = Path(rtslib_fb.node.CFSNode.configfs_dir)
            if bound != self.paths.target:
                # rtslib keeps its root in a class attribute; rebinding it would change
                # it for every user of rtslib in this process, so we refuse instead.
                raise ExecutionError(f"rtslib-fb works on {bound}, not {self.paths.target}")
            self._rts = rtslib_fb
        return self._rts

    def _target(self, key: ObjKey) -> Any:
        rts = self._rtslib()
        fabric = "iscsi" if key.kind.label.startswith("iscsi_") else "loopback"
        return rts.Target(rts.FabricModule(fabric), key.ident[0], mode="lookup")

    def _tpg(self, key: ObjKey) -> Any:
        return self._rtslib().TPG(self._target(key), int(key.ident[1]), mode="lookup")

    def _acl(self, key: ObjKey) -> Any:
        return self._rtslib().NodeACL(self._tpg(key), key.ident[2], mode="lookup")

    def _hba_of(self, backstore: str, ledger: Ledger) -> int:
        rec = ledger.get(ObjKey(Kind.BACKSTORE, (backstore,)))
        if rec is None or rec.hba is None:
            raise ExecutionError(f"backstore {backstore!r} is not in the ledger")
        return rec.hba

    def _set_chap(self, obj: Any, chap: dict[str, str], key: ObjKey) -> None:
        for attr in _CHAP_ATTRS:
            setattr(obj, f"chap_{attr}", chap[attr])
        # rtslib silently ignores TPG-level auth files the kernel lacks; check instead.
        if chap["userid"] and getattr(obj, "chap_userid", None) != chap["userid"]:
            raise ExecutionError(f"{key}: the kernel did not accept CHAP credentials "
                                 "(no auth/ directory on this TPG?)")

    def _create_loop_tpg(self, key: ObjKey, nexus: str) -> None:
        rts = self._rtslib()
        target = self._target(key)
        if not nexus:
            rts.TPG(target, int(key.ident[1]), mode="create")  # rtslib picks a nexus
            return
        # rtslib sets a random nexus inside TPG(); to choose ours, make the directory
        # and write the nexus first, then let rtslib look the TPG up.
        path = object_path(key, self.paths)
        assert path is not None
        self.fs.mkdir(path)
        self.fs.write(path / "nexus", nexus)
        rts.TPG(target, int(key.ident[1]), mode="lookup")

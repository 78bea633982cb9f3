"""Object identities (ledger keys) and where each object lives in configfs.

The configfs root is injectable everywhere (default /sys/kernel/config) so the
direct-write helpers and the existence probe can be exercised against a temp dir.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/sys/kernel/config")
TPG_TAG = 1  # one TPG per target; tcm_loop uses the tag as the SCSI target id (0..1)


@dataclass(frozen=True, slots=True)
class ConfigfsPaths:
    root: Path = DEFAULT_ROOT

    @property
    def target(self) -> Path:
        return self.root / "target"

    @property
    def core(self) -> Path:
        return self.target / "core"

    @property
    def dbroot(self) -> Path:
        return self.target / "dbroot"

    @property
    def iscsi(self) -> Path:
        return self.target / "iscsi"

    @property
    def loopback(self) -> Path:
        return self.target / "loopback"

    @property
    def discovery_auth(self) -> Path:
        return self.iscsi / "discovery_auth"

    @property
    def nvmet(self) -> Path:
        return self.root / "nvmet"

    def user_backstore(self, hba: int, name: str) -> Path:
        return self.core / f"user_{hba}" / name


class Kind(enum.Enum):
    """Kinds of object we create. ``rank`` orders creation; deletion runs it backwards,
    so children always go before their parents and LUNs before their backstores."""

    DISCOVERY_AUTH = ("discovery_auth", 0)
    BACKSTORE = ("backstore", 1)
    ISCSI_TARGET = ("iscsi_target", 2)
    ISCSI_TPG = ("iscsi_tpg", 3)
    ISCSI_LUN = ("iscsi_lun", 4)
    ISCSI_ACL = ("iscsi_acl", 5)
    ISCSI_MAPPED_LUN = ("iscsi_mapped_lun", 6)
    ISCSI_PORTAL = ("iscsi_portal", 7)
    LOOP_TARGET = ("loop_target", 2)
    LOOP_TPG = ("loop_tpg", 3)
    LOOP_LUN = ("loop_lun", 4)
    # nvmet: namespaces go before the tcm_loop LUNs whose disks they hold open, and a
    # subsystem reaches a port (where hosts can see it) only once it is complete.
    NVMET_HOST = ("nvmet_host", 5)
    NVMET_PORT = ("nvmet_port", 5)
    NVMET_SUBSYSTEM = ("nvmet_subsystem", 5)
    NVMET_ALLOWED_HOST = ("nvmet_allowed_host", 6)
    NVMET_NAMESPACE = ("nvmet_namespace", 6)
    NVMET_PORT_SUBSYSTEM = ("nvmet_port_subsystem", 8)

    def __init__(self, label: str, rank: int) -> None:
        self.label = label
        self.rank = rank

    @classmethod
    def from_label(cls, label: str) -> Kind:
        for kind in cls:
            if kind.label == label:
                return kind
        raise ValueError(f"unknown object kind {label!r}")


@dataclass(frozen=True, slots=True, order=False)
class ObjKey:
    """Identity of one object: its kind plus the path components that name it.

    iscsi_*: (iqn[, tag[, ...]]); loop_*: (naa[, tag[, lun]]); backstore: (name,);
    nvmet_host: (hostnqn,); nvmet_subsystem: (nqn,); nvmet_namespace: (nqn, nsid);
    nvmet_allowed_host: (nqn, hostnqn); nvmet_port: (traddr, trsvcid);
    nvmet_port_subsystem: (traddr, trsvcid, nqn). A port is named by its address
    because its configfs id is picked at creation (kept in the ledger record).
    """

    kind: Kind
    ident: tuple[str | int, ...]

    def __str__(self) -> str:
        return self.kind.label + ":" + "/".join(str(p) for p in self.ident)

    def __repr__(self) -> str:
        return f"ObjKey({self})"

    def sort_key(self) -> tuple[int, str, tuple[tuple[int, str], ...]]:
        # ints compare numerically (lun_2 before lun_10), strings alphabetically
        parts = tuple((0, f"{p:012d}") if isinstance(p, int) else (1, p) for p in self.ident)
        return (self.kind.rank, self.kind.label, parts)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind.label, "ident": list(self.ident)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ObjKey:
        ident = data["ident"]
        assert isinstance(ident, list)
        return cls(Kind.from_label(str(data["kind"])), tuple(ident))


def object_path(key: ObjKey, paths: ConfigfsPaths, hba: int | None = None,
                port_id: int | None = None) -> Path | None:
    """The configfs directory (or symlink) of an object, or None when it has none
    (discovery auth) or cannot be known (a backstore whose hba index, or a port whose
    id, was never allocated)."""
    k, i = key.kind, key.ident
    if k is Kind.DISCOVERY_AUTH:
        return None
    if k.label.startswith("nvmet_"):
        return _nvmet_path(key, paths, port_id)
    if k is Kind.BACKSTORE:
        return None if hba is None else paths.user_backstore(hba, str(i[0]))
    fabric = paths.iscsi if k.label.startswith("iscsi_") else paths.loopback
    base = fabric / str(i[0])
    if k in (Kind.ISCSI_TARGET, Kind.LOOP_TARGET):
        return base
    tpg = base / f"tpgt_{i[1]}"
    if k in (Kind.ISCSI_TPG, Kind.LOOP_TPG):
        return tpg
    if k in (Kind.ISCSI_LUN, Kind.LOOP_LUN):
        return tpg / "lun" / f"lun_{i[2]}"
    if k is Kind.ISCSI_PORTAL:
        return tpg / "np" / str(i[2])
    if k is Kind.ISCSI_ACL:
        return tpg / "acls" / str(i[2])
    if k is Kind.ISCSI_MAPPED_LUN:
        return tpg / "acls" / str(i[2]) / f"lun_{i[3]}"
    raise AssertionError(k)


def _nvmet_path(key: ObjKey, paths: ConfigfsPaths, port_id: int | None) -> Path | None:
    k, i, base = key.kind, key.ident, paths.nvmet
    if k is Kind.NVMET_HOST:
        return base / "hosts" / str(i[0])
    if k is Kind.NVMET_SUBSYSTEM:
        return base / "subsystems" / str(i[0])
    if k is Kind.NVMET_NAMESPACE:
        return base / "subsystems" / str(i[0]) / "namespaces" / str(i[1])
    if k is Kind.NVMET_ALLOWED_HOST:
        return base / "subsystems" / str(i[0]) / "allowed_hosts" / str(i[1])
    if port_id is None:
        return None
    if k is Kind.NVMET_PORT:
        return base / "ports" / str(port_id)
    if k is Kind.NVMET_PORT_SUBSYSTEM:
        return base / "ports" / str(port_id) / "subsystems" / str(i[2])
    raise AssertionError(k)

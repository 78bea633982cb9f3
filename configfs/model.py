"""Desired state: what LIO should look like. Frozen dataclasses, validated on construction.

Every rule here is one the kernel (or an initiator) would enforce later with a vaguer
error, or one whose violation would corrupt our own bookkeeping (duplicate names).
Convenience inputs (plain tuples for portals, LUNs and mapped LUNs, lists instead of
tuples) are normalised in ``__post_init__`` so the stored value is always canonical:
two equal states compare equal and hash equal, which the planner relies on.
"""

from __future__ import annotations

import ipaddress
import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StateError
from .nvmet_model import NvmeHost, NvmeSubsystem

MAX_LUN = 65535  # LIO: lun_0 .. lun_65535 (rtslib's MAX_TARGET_LUN agrees)
_MIB = 1024 * 1024

# RFC 3720 3.2.6.3.1: iqn.yyyy-mm.<reversed domain>[:<anything>]. iSCSI names are
# lowercase after stringprep and LIO/rtslib reject '_' and spaces, so be strict here
# rather than let rtslib silently lowercase the name and break our ledger keys.
# rtslib also wants at least two domain labels ("iqn.2026-01.io.thur").
_LABEL = r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"
_IQN = re.compile(rf"^iqn\.\d{{4}}-(0[1-9]|1[0-2])\.{_LABEL}(\.{_LABEL})+(:[a-z0-9.:-]+)?$")
_EUI = re.compile(r"^eui\.[0-9a-f]{16}$")
# NAA as tcm_loop/rtslib accept it. rtslib rewrites "naa.6..." to "naa.5...", so 6 is
# excluded (it is not in rtslib's accepted set anyway).
_NAA = re.compile(r"^naa\.[125c-f][0-9a-f]{15}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# "<handler subtype>/<handler config>": ',' separates control options, whitespace ends
# them, and ':' breaks rtslib/targetcli's parsing of the info file.
_DEV_CONFIG = re.compile(r"^[A-Za-z0-9_.-]+/[^,\s:]*$")
# The APTPL file is named aptpl_<serial> inside db_root/pr: no '/', nothing exotic.
_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
_CHAP_VALUE = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable, no spaces (kernel strips them)


def _fail(where: str, message: str) -> StateError:
    return StateError(f"{where}: {message}")


def check_iscsi_name(value: str, where: str) -> None:
    if not isinstance(value, str) or not (_IQN.match(value) or _EUI.match(value)):
        raise _fail(where, f"{value!r} is not an iSCSI name (expected lowercase "
                           "'iqn.YYYY-MM.reversed.domain[:id]' or 'eui.<16 hex digits>')")
    if len(value.encode()) > 223:
        raise _fail(where, f"{value!r} is longer than 223 bytes (RFC 3720 limit)")


def check_naa(value: str, where: str) -> None:
    if not isinstance(value, str) or not _NAA.match(value):
        raise _fail(where, f"{value!r} is not a NAA WWN (expected lowercase 'naa.' followed "
                           "by 16 hex digits, the first one of 1, 2, 5 or c-f)")


def _check_int(value: Any, where: str, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(where, f"{value!r} must be an integer in {lo}..{hi}")


def _check_lun(value: Any, where: str) -> None:
    _check_int(value, where, 0, MAX_LUN)


def _unique(items: list[Any], where: str, what: str) -> None:
    seen: set[Any] = set()
    for item in items:
        if item in seen:
            raise _fail(where, f"duplicate {what} {item!r}")
        seen.add(item)


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass in __post_init__


@dataclass(frozen=True, slots=True)
class Chap:
    """CHAP credentials. One-way: the initiator proves itself. Mutual: the target too."""

    userid: str
    password: str
    mutual_userid: str | None = None
    mutual_password: str | None = None

    def __post_init__(self) -> None:
        for name in ("userid", "password", "mutual_userid", "mutual_password"):
            value = getattr(self, name)
            if value is None and name.startswith("mutual"):
                continue
            if not isinstance(value, str) or not _CHAP_VALUE.match(value) or value == "NULL":
                # "NULL" is how LIO spells "unset"; writing it would silently clear CHAP.
                raise _fail(f"chap.{name}", "must be 1..255 printable characters without "
                                            "spaces and not the word NULL")
        if (self.mutual_userid is None) != (self.mutual_password is None):
            raise _fail("chap", "mutual CHAP needs both mutual_userid and mutual_password")
        if self.mutual_password is not None and self.mutual_password == self.password:
            # RFC 1994/3720: a secret reused in both directions enables reflection attacks.
            raise _fail("chap", "mutual_password must differ from password")

    @property
    def mutual(self) -> bool:
        return self.mutual_userid is not None

    def __repr__(self) -> str:  # never print secrets into logs
        return f"Chap(userid={self.userid!r}, mutual={self.mutual})"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserBackstore:
    """A TCMU (target_core_user) device served by our handler through /dev/uioN.

    Sizes and timeouts are written to the kernel exactly as given:
    ``cmd_time_out`` and ``qfull_time_out`` are seconds (-1 for qfull means "use
    cmd_time_out"); tape needs cmd_time_out in hours because a LOCATE or ERASE can
    legitimately take that long, and the kernel only accepts it before export.
    """

    name: str
    dev_config: str
    size_bytes: int
    wwn_serial: str
    hw_block_size: int = 512
    hw_max_sectors: int = 2048
    max_data_area_mb: int = 64
    data_pages_per_blk: int | None = None
    cmd_ring_size_mb: int | None = None
    cmd_time_out: int = 30
    qfull_time_out: int = -1
    tmr_notification: bool = True

    def __post_init__(self) -> None:
        where = f"backstore {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise _fail(where, "name must be 1..64 of [A-Za-z0-9_.-], starting alphanumeric")
        if not isinstance(self.dev_config, str) or not _DEV_CONFIG.match(self.dev_config) \
                or len(self.dev_config) > 255:
            raise _fail(where, f"dev_config {self.dev_config!r} must be "
                               "'<subtype>/<config>' (<=255 chars, no ',', ':' or spaces)")
        if not isinstance(self.wwn_serial, str) or not _SERIAL.match(self.wwn_serial):
            raise _fail(where, f"wwn_serial {self.wwn_serial!r} must be 1..253 of "
                               "[A-Za-z0-9_.-] (LIO names the APTPL file after it)")
        bs = self.hw_block_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 512 or bs > 65536 \
                or bs & (bs - 1):
            raise _fail(where, f"hw_block_size {bs!r} must be a power of two in 512..65536")
        _check_int(self.size_bytes, f"{where} size_bytes", bs, 2**63 - 1)
        if self.size_bytes % bs:
            raise _fail(where, f"size_bytes {self.size_bytes} is not a multiple of "
                               f"hw_block_size {bs}")
        _check_int(self.hw_max_sectors, f"{where} hw_max_sectors", 1, 2**24)
        _check_int(self.max_data_area_mb, f"{where} max_data_area_mb", 1, 2048)
        area = self.max_data_area_mb * _MIB
        if self.hw_max_sectors * bs > area:
            # A command larger than the whole data area can never be queued: it would
            # wait for ring space until qfull_time_out and then fail.
            raise _fail(where, f"hw_max_sectors*hw_block_size ({self.hw_max_sectors * bs} "
                               f"bytes) exceeds max_data_area_mb ({area} bytes)")
        if self.data_pages_per_blk is not None:
            _check_int(self.data_pages_per_blk, f"{where} data_pages_per_blk", 1,
                       area // mmap.PAGESIZE)
        if self.cmd_ring_size_mb is not None:
            _check_int(self.cmd_ring_size_mb, f"{where} cmd_ring_size_mb", 1, 255)
        _check_int(self.cmd_time_out, f"{where} cmd_time_out", 0, 4_294_967)
        _check_int(self.qfull_time_out, f"{where} qfull_time_out", -1, 4_294_967)
        if not isinstance(self.tmr_notification, bool):
            raise _fail(where, "tmr_notification must be a bool")


@dataclass(frozen=True, slots=True)
class Portal:
    ip: str
    port: int = 3260

    def __post_init__(self) -> None:
        raw = self.ip.strip("[]") if isinstance(self.ip, str) else self.ip
        try:
            addr = ipaddress.ip_address(raw)
        except ValueError:
            raise _fail("portal", f"{self.ip!r} is not an IPv4 or IPv6 address") from None
        _set(self, "ip", addr.compressed)
        _check_int(self.port, f"portal {self.ip}", 1, 65535)

    @property
    def configfs_name(self) -> str:
        """LIO names portals ip:port, with IPv6 addresses in brackets."""
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Lun:
    number: int
    backstore: str

    def __post_init__(self) -> None:
        _check_lun(self.number, f"lun {self.number!r}")


@dataclass(frozen=True, slots=True)
class MappedLun:
    mapped_lun: int
    tpg_lun: int
    write_protect: bool = False

    def __post_init__(self) -> None:
        _check_lun(self.mapped_lun, "mapped_lun")
        _check_lun(self.tpg_lun, "mapped tpg_lun")


@dataclass(frozen=True, slots=True)
class NodeAcl:
    """An initiator allowed in (ACL mode). ``mapped_luns=None`` maps every target LUN
    under its own number, like targetcli's auto_add_mapped_luns."""

    initiator_iqn: str
    chap: Chap | None = None
    mapped_luns: tuple[MappedLun, ...] | None = None

    def __post_init__(self) -> None:
        check_iscsi_name(self.initiator_iqn, "acl initiator")
        if self.mapped_luns is not None:
            mls = tuple(m if isinstance(m, MappedLun) else MappedLun(*m)
                        for m in self.mapped_luns)
            _unique([m.mapped_lun for m in mls], f"acl {self.initiator_iqn}", "mapped LUN")
            _set(self, "mapped_luns", mls)


def _as_tuple(value: Any, cls: type, where: str) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise _fail(where, "must be a list or tuple")
    return tuple(v if isinstance(v, cls) else cls(*v) for v in value)


@dataclass(frozen=True, slots=True, kw_only=True)
class IscsiTarget:
    """An iSCSI target with one TPG (tag 1).

    Access is either demo mode (any initiator, generate_node_acls=1) or explicit ACLs.
    ``demo_mode=None`` infers: demo mode exactly when no ACLs are given.
    ``authentication=True`` enforces CHAP: on the TPG in demo mode (``chap``), per ACL
    otherwise (each ``NodeAcl.chap``).
    """

    iqn: str
    portals: tuple[Portal, ...]
    luns: tuple[Lun, ...]
    acls: tuple[NodeAcl, ...] = ()
    authentication: bool = False
    chap: Chap | None = None
    demo_mode: bool | None = None

    def __post_init__(self) -> None:
        where = f"iscsi target {self.iqn!r}"
        check_iscsi_name(self.iqn, where)
        portals = _as_tuple(self.portals, Portal, f"{where} portals")
        luns = _as_tuple(self.luns, Lun, f"{where} luns")
        acls = tuple(self.acls)
        _set(self, "portals", portals)
        _set(self, "luns", luns)
        _set(self, "acls", acls)
        _unique([(p.ip, p.port) for p in portals], where, "portal")
        _unique([lun.number for lun in luns], where, "LUN number")
        _unique([a.initiator_iqn for a in acls], where, "ACL initiator")
        demo = not acls if self.demo_mode is None else self.demo_mode
        _set(self, "demo_mode", demo)
        if demo and acls:
            raise _fail(where, "demo mode and explicit ACLs are exclusive (pick one)")
        numbers = {lun.number for lun in luns}
        for acl in acls:
            for m in acl.mapped_luns or ():
                if m.tpg_lun not in numbers:
                    raise _fail(where, f"ACL {acl.initiator_iqn} maps tpg_lun {m.tpg_lun}, "
                                       "which is not a LUN of this target")
        if demo:
            if self.authentication and self.chap is None:
                raise _fail(where, "authentication in demo mode needs TPG chap credentials")
            if self.chap is not None and not self.authentication:
                raise _fail(where, "chap is set but authentication is off (it would be "
                                   "ignored); set authentication=True or drop chap")
        else:
            if self.chap is not None:
                raise _fail(where, "TPG chap applies to demo mode only; in ACL mode put "
                                   "credentials on each NodeAcl")
            for acl in acls:
                if self.authentication and acl.chap is None:
                    raise _fail(where, f"authentication is on but ACL {acl.initiator_iqn} "
                                       "has no chap credentials")
                if acl.chap is not None and not self.authentication:
                    raise _fail(where, f"ACL {acl.initiator_iqn} has chap but "
                                       "authentication is off (it would be ignored)")

    def mapped_luns_of(self, acl: NodeAcl) -> tuple[MappedLun, ...]:
        if acl.mapped_luns is not None:
            return acl.mapped_luns
        return tuple(MappedLun(lun.number, lun.number) for lun in self.luns)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopbackTarget:
    """A tcm_loop target: its LUNs become local SCSI devices (/dev/sdX, nstN, schN).

    ``nexus_wwn`` is the local initiator port; give a fixed one if persistent
    reservations must survive a reboot (it is what LIO keys them by), else the kernel
    side gets a random one at creation.
    """

    wwn: str
    luns: tuple[Lun, ...]
    nexus_wwn: str | None = None

    def __post_init__(self) -> None:
        where = f"loopback target {self.wwn!r}"
        check_naa(self.wwn, where)
        if self.nexus_wwn is not None:
            check_naa(self.nexus_wwn, f"{where} nexus_wwn")
        luns = _as_tuple(self.luns, Lun, f"{where} luns")
        _set(self, "luns", luns)
        _unique([lun.number for lun in luns], where, "LUN number")


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetState:
    """Everything we want configured. ``discovery_auth`` is fabric-wide in LIO (one
    setting for all iSCSI targets on the host), so it lives here, not on a target."""

    db_root: Path
    backstores: tuple[UserBackstore, ...] = ()
    iscsi_targets: tuple[IscsiTarget, ...] = ()
    loopback_targets: tuple[LoopbackTarget, ...] = ()
    discovery_auth: Chap | None = field(default=None)
    nvme_hosts: tuple[NvmeHost, ...] = ()
    nvme_subsystems: tuple[NvmeSubsystem, ...] = ()

    def __post_init__(self) -> None:
        db_root = Path(self.db_root)
        if not db_root.is_absolute():
            raise _fail("db_root", f"{str(self.db_root)!r} must be an absolute path")
        _set(self, "db_root", db_root)
        for name in ("backstores", "iscsi_targets", "loopback_targets", "nvme_hosts",
                     "nvme_subsystems"):
            _set(self, name, tuple(getattr(self, name)))
        _unique([b.name for b in self.backstores], "state", "backstore name")
        _unique([b.wwn_serial for b in self.backstores], "state", "backstore wwn_serial")
        _unique([t.iqn for t in self.iscsi_targets], "state", "iSCSI target")
        _unique([t.wwn for t in self.loopback_targets], "state", "loopback target")
        names = {b.name for b in self.backstores}
        targets: list[IscsiTarget | LoopbackTarget] = [*self.iscsi_targets,
                                                       *self.loopback_targets]
        for target in targets:
            ident = target.iqn if isinstance(target, IscsiTarget) else target.wwn
            for lun in target.luns:
                if lun.backstore not in names:
                    raise _fail(f"target {ident}", f"LUN {lun.number} refers to unknown "
                                                   f"backstore {lun.backstore!r}")
        self._check_nvme()

    def _check_nvme(self) -> None:
        _unique([h.nqn for h in self.nvme_hosts], "state", "NVMe host")
        _unique([s.nqn for s in self.nvme_subsystems], "state", "NVMe subsystem")
        hosts = {h.nqn for h in self.nvme_hosts}
        loops = {(t.wwn, lun.number) for t in self.loopback_targets for lun in t.luns}
        tls: dict[tuple[str, int], bool] = {}
        for sub in self.nvme_subsystems:
            where = f"nvme subsystem {sub.nqn}"
            for host in sub.allowed_hosts:
                if host not in hosts:
                    raise _fail(where, f"allowed host {host!r} is not one of nvme_hosts")
            for ns in sub.namespaces:
                if ns.loop is not None and (ns.loop.wwn, ns.loop.lun) not in loops:
                    raise _fail(where, f"namespace {ns.nsid} exports loopback LUN "
                                       f"{ns.loop.wwn}/{ns.loop.lun}, which is not in the state")
            for port in sub.ports:
                if tls.setdefault((port.traddr, port.trsvcid), port.tls) != port.tls:
                    raise _fail(where, f"port {port} is asked for with and without TLS")

    def backstore(self, name: str) -> UserBackstore:
        for b in self.backstores:
            if b.name == name:
                return b
        raise KeyError(name)

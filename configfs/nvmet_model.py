"""Desired state for nvmet (the kernel's NVMe-oF target): subsystems, namespaces,
ports, hosts. Frozen dataclasses validated on construction, like model.py.

A namespace exports a block device by path; Thur's volumes reach nvmet as the local
SCSI disks tcm_loop makes of their backstores (``loop`` names that LUN so the
executor can wait for the disk and check the path really is it).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from .errors import StateError

# NVMe base spec 4.5: "nqn.yyyy-mm.<reversed domain>:<anything>" (or the UUID form,
# "nqn.2014-08.org.nvmexpress:uuid:<uuid>"), at most 223 bytes. '/' would make
# a configfs path of it; spaces and control characters are refused by the kernel.
_NQN = re.compile(r"^nqn\.\d{4}-(0[1-9]|1[0-2])\.[A-Za-z0-9][A-Za-z0-9.-]*:[\x21-\x2e\x30-\x7e]+$")
MAX_NQN = 223
MAX_NSID = 0xFFFFFFFE  # FFFFFFFFh is the broadcast value
# nvmet's serial/model attributes: printable ASCII, 20 and 40 bytes.
_SERIAL = re.compile(r"^[\x21-\x7e]{1,20}$")
_MODEL = re.compile(r"^[\x20-\x7e]{1,40}$")
DHCHAP_HASHES = ("hmac(sha256)", "hmac(sha384)", "hmac(sha512)")
DHCHAP_DHGROUPS = ("null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192")
# DHHC-1 secret: "DHHC-1:<hh>:<base64(key || crc32_le(key))>:", hh 00 (key used as is)
# or 01/02/03 (transformed with SHA-256/384/512); key 32, 48 or 64 bytes (NVMe 8.13.5.8).
_DHHC = re.compile(r"^DHHC-1:(0[0-3]):([A-Za-z0-9+/]+={0,2}):$")
DHCHAP_KEY_LENGTHS = (32, 48, 64)
TSAS = ("none", "tls1.3")


def _fail(where: str, message: str) -> StateError:
    return StateError(f"{where}: {message}")


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def check_nqn(value: object, where: str) -> None:
    if not isinstance(value, str) or not _NQN.match(value):
        raise _fail(where, f"{value!r} is not an NVMe qualified name (expected "
                           "'nqn.YYYY-MM.reversed.domain:name', no spaces or '/')")
    if len(value.encode()) > MAX_NQN:
        raise _fail(where, f"{value!r} is longer than {MAX_NQN} bytes")


def check_dhchap_secret(value: object, where: str) -> None:
    """A DHHC-1 secret as `nvme gen-dhchap-key` prints it; the CRC must match, so a
    mistyped secret fails here instead of as an authentication failure later."""
    m = _DHHC.match(value) if isinstance(value, str) else None
    if m is None:
        raise _fail(where, "must be a DHHC-1 secret 'DHHC-1:0N:<base64>:' "
                           "(make one with `nvme gen-dhchap-key`)")
    try:
        raw = base64.b64decode(m.group(2), validate=True)
    except binascii.Error:
        raise _fail(where, "the DHHC-1 secret is not valid base64") from None
    key, crc = raw[:-4], raw[-4:]
    if len(key) not in DHCHAP_KEY_LENGTHS:
        raise _fail(where, f"the DHHC-1 key is {len(key)} bytes; it must be 32, 48 or 64")
    if zlib.crc32(key).to_bytes(4, "little") != crc:
        raise _fail(where, "the DHHC-1 secret's CRC-32 does not match (mistyped or cut?)")


def make_dhchap_secret(key: bytes, transform: int = 0) -> str:
    """The DHHC-1 text for ``key`` (what `nvme gen-dhchap-key` prints)."""
    if len(key) not in DHCHAP_KEY_LENGTHS or transform not in range(4):
        raise ValueError("key must be 32, 48 or 64 bytes and transform 0..3")
    blob = base64.b64encode(key + zlib.crc32(key).to_bytes(4, "little")).decode()
    return f"DHHC-1:{transform:02d}:{blob}:"


@dataclass(frozen=True, slots=True, kw_only=True)
class NvmeHost:
    """A host NQN nvmet knows (``hosts/<nqn>``), with its DH-HMAC-CHAP secrets.

    ``dhchap_key`` is the host's secret (one-way: the host proves itself);
    ``dhchap_ctrl_key`` adds the controller's (bidirectional). No key: the host is
    only admitted, not authenticated.
    """

    nqn: str
    dhchap_key: str | None = None
    dhchap_ctrl_key: str | None = None
    dhchap_hash: str = "hmac(sha256)"
    dhchap_dhgroup: str = "null"

    def __post_init__(self) -> None:
        where = f"nvme host {self.nqn!r}"
        check_nqn(self.nqn, where)
        if self.dhchap_key is not None:
            check_dhchap_secret(self.dhchap_key, f"{where} dhchap_key")
        if self.dhchap_ctrl_key is not None:
            if self.dhchap_key is None:
                raise _fail(where, "dhchap_ctrl_key (bidirectional) needs dhchap_key too")
            check_dhchap_secret(self.dhchap_ctrl_key, f"{where} dhchap_ctrl_key")
            if self.dhchap_ctrl_key == self.dhchap_key:
                raise _fail(where, "dhchap_ctrl_key must differ from dhchap_key")
        if self.dhchap_hash not in DHCHAP_HASHES:
            raise _fail(where, f"dhchap_hash {self.dhchap_hash!r} must be one of "
                               f"{', '.join(DHCHAP_HASHES)}")
        if self.dhchap_dhgroup not in DHCHAP_DHGROUPS:
            raise _fail(where, f"dhchap_dhgroup {self.dhchap_dhgroup!r} must be one of "
                               f"{', '.join(DHCHAP_DHGROUPS)}")

    def __repr__(self) -> str:  # never print secrets into logs
        return (f"NvmeHost(nqn={self.nqn!r}, auth={self.dhchap_key is not None}, "
                f"bidirectional={self.dhchap_ctrl_key is not None})")


@dataclass(frozen=True, slots=True)
class LoopRef:
    """The tcm_loop LUN whose local disk a namespace exports."""

    wwn: str
    lun: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NvmeNamespace:
    """``namespaces/<nsid>``: a block device, identified by a stable UUID and NGUID."""

    nsid: int
    device_path: str
    device_uuid: str
    device_nguid: str
    loop: LoopRef | None = None

    def __post_init__(self) -> None:
        where = f"nvme namespace {self.nsid!r}"
        if isinstance(self.nsid, bool) or not isinstance(self.nsid, int) \
                or not 1 <= self.nsid <= MAX_NSID:
            raise _fail(where, f"nsid must be an integer in 1..{MAX_NSID}")
        if not isinstance(self.device_path, str) or not self.device_path.startswith("/") \
                or any(c.isspace() for c in self.device_path):
            raise _fail(where, f"device_path {self.device_path!r} must be an absolute path")
        for name in ("device_uuid", "device_nguid"):
            try:
                value = str(uuid.UUID(getattr(self, name)))
            except (ValueError, TypeError, AttributeError):
                raise _fail(where, f"{name} {getattr(self, name)!r} must be 16 bytes "
                                   "in UUID form") from None
            _set(self, name, value)  # canonical: the kernel reads it back this way


@dataclass(frozen=True, slots=True, kw_only=True)
class NvmePort:
    """``ports/<id>``: a TCP listener. Its numeric id is picked when it is made (the
    ledger remembers it); it is identified by its address."""

    traddr: str
    trsvcid: int = 4420
    tls: bool = False

    def __post_init__(self) -> None:
        try:
            addr = ipaddress.ip_address(self.traddr.strip("[]"))
        except (ValueError, AttributeError):
            raise _fail("nvme port", f"{self.traddr!r} is not an IPv4 or IPv6 address") \
                from None
        _set(self, "traddr", addr.compressed)
        port = self.trsvcid
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise _fail(f"nvme port {self.traddr}", f"trsvcid {port!r} must be 1..65535")

    @property
    def adrfam(self) -> str:
        return "ipv6" if ":" in self.traddr else "ipv4"

    @property
    def tsas(self) -> str:
        return "tls1.3" if self.tls else "none"

    def __str__(self) -> str:
        host = f"[{self.traddr}]" if ":" in self.traddr else self.traddr
        return f"{host}:{self.trsvcid}"


@dataclass(frozen=True, slots=True, kw_only=True)
class NvmeSubsystem:
    """``subsystems/<nqn>`` with its namespaces, exposed on ``ports``.

    ``allowed_hosts`` empty: any host may connect (attr_allow_any_host=1). Otherwise
    only those, and each must be an ``NvmeHost`` of the state (nvmet authenticates a
    host only through that link).
    """

    nqn: str
    serial: str
    model: str = "Thur VSA"
    namespaces: tuple[NvmeNamespace, ...] = ()
    ports: tuple[NvmePort, ...] = ()
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"nvme subsystem {self.nqn!r}"
        check_nqn(self.nqn, where)
        if not isinstance(self.serial, str) or not _SERIAL.match(self.serial):
            raise _fail(where, f"serial {self.serial!r} must be 1..20 printable characters")
        if not isinstance(self.model, str) or not _MODEL.match(self.model):
            raise _fail(where, f"model {self.model!r} must be 1..40 printable characters")
        for name in ("namespaces", "ports", "allowed_hosts"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise _fail(where, f"{name} must be a list or tuple")
            _set(self, name, tuple(value))
        for host in self.allowed_hosts:
            check_nqn(host, f"{where} allowed host")
        for label, items in (("nsid", [n.nsid for n in self.namespaces]),
                             ("port", [(p.traddr, p.trsvcid) for p in self.ports]),
                             ("allowed host", list(self.allowed_hosts))):
            if len(set(items)) != len(items):
                raise _fail(where, f"duplicate {label}")
        for attr in ("device_uuid", "device_nguid"):
            values = [getattr(n, attr) for n in self.namespaces]
            if len(set(values)) != len(values):
                raise _fail(where, f"two namespaces share a {attr}")

"""Loading and validating thurvtld's YAML configuration, and the helpers thurvsad's
(thur/vsa/config.py) shares with it.

Every error names the key, the value and what is allowed, so an admin can fix
the file without reading code. Defaults live here, next to the keys they
belong to.
"""

from __future__ import annotations

import grp
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from thur.config_schema import VTL_SCHEMA, Section
from thur.configkit import ConfigError, as_mapping, reject_unknown
from thur.otlp import OtlpConfig
from thur.storage_config import BackendConfig, PoolSettings, parse_backend, parse_pool

IQN_RE = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*(:[^\s]+)?$")
DEFAULT_TARGET_IQN = "iqn.2026-11.io.thur:vtl"
MAX_SLOTS = 65535
MAX_MAIL_SLOTS = 65535
MAX_DRIVES = 255
# One 16-bit address space holds every element (SMC mode page 1Dh).
MAX_ELEMENTS = 0x10000


@dataclass(frozen=True)
class Chap:
    """CHAP credentials (RFC 3720 limits secrets to 12..16 bytes in LIO)."""

    userid: str
    password: str


@dataclass(frozen=True)
class Portal:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class IscsiConfig:
    target_iqn: str = DEFAULT_TARGET_IQN
    listen: tuple[Portal, ...] = (Portal("0.0.0.0", 3260),)
    # Initiators allowed to log in; empty means any initiator (LIO demo mode).
    initiators: tuple[str, ...] = ()
    chap: Chap | None = None
    mutual_chap: Chap | None = None
    discovery_chap: Chap | None = None


@dataclass(frozen=True)
class LibraryConfig:
    num_slots: int = 24
    num_mail_slots: int = 4
    num_drives: int = 2
    lto_generation: int = 8


@dataclass(frozen=True)
class TcmuConfig:
    # Tape commands (ERASE, LOCATE, long writes under backpressure) take far
    # longer than the kernel's 30 s default; the initiator's own timeouts rule.
    cmd_time_out: int = 4 * 3600
    qfull_time_out: int = 30
    max_data_area_mb: int = 64


@dataclass(frozen=True)
class HttpConfig:
    """The /health, /metrics, /sessions, /info endpoint (docs/OPERATIONS.md)."""

    listen: Portal


# Distinct per product, so thurvtld and thurvsad can share a host.
DEFAULT_VTL_HTTP = HttpConfig(Portal("0.0.0.0", 9090))
# LIO keeps persistent reservations (APTPL) under one db_root per host, settable only
# while no backstore exists: thurvtld and thurvsad share this one so both can run on one
# host (the files are named after each device's unit serial, so they never collide).
DEFAULT_LIO_DB_ROOT = "/var/lib/thur/lio"


@dataclass(frozen=True)
class VtlConfig:
    data_dir: Path
    library: LibraryConfig = field(default_factory=LibraryConfig)
    iscsi: IscsiConfig = field(default_factory=IscsiConfig)
    tcmu: TcmuConfig = field(default_factory=TcmuConfig)
    admin_socket: Path = Path("/run/thurvtl/admin.sock")
    # Owner group of the admin socket; None: `thurvtl` if it exists, else the daemon's.
    admin_group: str | None = None
    # Prefix for our kernel object names, so two daemons can share a host.
    instance: str = "thurvtl"
    lio_db_root: Path = Path(DEFAULT_LIO_DB_ROOT)
    http: HttpConfig | None = DEFAULT_VTL_HTTP  # None: no HTTP endpoint
    otlp: OtlpConfig | None = None  # None: no OTLP export
    backend: BackendConfig = field(default_factory=BackendConfig)  # default: local, no cloud
    pool: PoolSettings = field(default_factory=PoolSettings)


def _int(section: dict[str, Any], prefix: str, name: str, default: int, lo: int, hi: int) -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{prefix}{name}", value, f"an integer from {lo} to {hi}")
    return value


def _str(section: dict[str, Any], prefix: str, name: str, default: str | None) -> str | None:
    value = section.get(name, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{prefix}{name}", value, "a string")
    return value


def _chap(raw: object, key: str) -> Chap | None:
    if raw is None:
        return None
    section = as_mapping(raw, key)
    reject_unknown(section, key + ".", {"userid", "password"})
    userid = _str(section, key + ".", "userid", None)
    password = _str(section, key + ".", "password", None)
    if not userid:
        raise ConfigError(key + ".userid", userid, "a non-empty user name")
    if password is None or not 12 <= len(password) <= 16:
        raise ConfigError(key + ".password", "***", "a secret of 12 to 16 characters (LIO limit)")
    return Chap(userid, password)


def _portal(raw: object, key: str, default_port: int = 3260) -> Portal:
    text = str(raw)
    host, sep, port_text = text.rpartition(":")
    if not sep or (host.count(":") and not host.endswith("]")):  # "IP" or a bare IPv6
        host, port_text = text, str(default_port)
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise ConfigError(
            key, raw, f"an address 'IP:PORT', e.g. '0.0.0.0:{default_port}'"
        ) from None
    if not 1 <= port <= 65535:
        raise ConfigError(key, raw, "a TCP port from 1 to 65535")
    return Portal(host, port)


parse_portal = _portal


def _iqn(value: object, key: str) -> str:
    if not isinstance(value, str) or not IQN_RE.match(value):
        raise ConfigError(key, value, "an iSCSI name like 'iqn.2026-11.com.example:name'")
    return value


def _library(raw: object, schema: Section) -> LibraryConfig:
    section = as_mapping(raw, "library")
    p = "library."
    reject_unknown(section, p, schema.names())
    d = schema.default
    gen = section.get("lto_generation", d("lto_generation"))
    if gen != 8:
        raise ConfigError("library.lto_generation", gen, "8 (LTO-8 is the emulated generation)")
    library = LibraryConfig(
        num_slots=_int(section, p, "num_slots", d("num_slots"), 1, MAX_SLOTS),
        num_mail_slots=_int(section, p, "num_mail_slots", d("num_mail_slots"), 0, MAX_MAIL_SLOTS),
        num_drives=_int(section, p, "num_drives", d("num_drives"), 1, MAX_DRIVES),
        lto_generation=gen,
    )
    # Each cap fits 16 bits on its own, but SMC element addresses of all four kinds
    # (one transport, drives, mail slots, slots) share one 16-bit space.
    total = 1 + library.num_drives + library.num_mail_slots + library.num_slots
    if total > MAX_ELEMENTS:
        raise ConfigError(
            "library",
            f"{library.num_slots} slots + {library.num_mail_slots} mail slots + "
            f"{library.num_drives} drives",
            f"at most {MAX_ELEMENTS - 1} in all (SMC element addresses are 16-bit "
            "and one goes to the robot)",
        )
    return library


def parse_iscsi(raw: object, schema: Section) -> IscsiConfig:
    """The `iscsi` section, with the product's defaults (its schema's `iscsi`)."""
    section = as_mapping(raw, "iscsi")
    p = "iscsi."
    reject_unknown(section, p, schema.names())
    listen_raw = section.get("listen", schema.default("listen"))
    if isinstance(listen_raw, str):
        listen_raw = [listen_raw]
    if not isinstance(listen_raw, list) or not listen_raw:
        raise ConfigError("iscsi.listen", listen_raw, "a non-empty list of 'IP:PORT'")
    initiators = section.get("initiators", schema.default("initiators"))
    if not isinstance(initiators, list):
        raise ConfigError("iscsi.initiators", initiators, "a list of initiator IQNs")
    chap = _chap(section.get("chap"), "iscsi.chap")
    mutual = _chap(section.get("mutual_chap"), "iscsi.mutual_chap")
    if mutual and not chap:
        raise ConfigError("iscsi.mutual_chap", "set", "only together with iscsi.chap")
    return IscsiConfig(
        target_iqn=_iqn(section.get("target_iqn", schema.default("target_iqn")),
                        "iscsi.target_iqn"),
        listen=tuple(_portal(v, f"iscsi.listen[{i}]") for i, v in enumerate(listen_raw)),
        initiators=tuple(_iqn(v, f"iscsi.initiators[{i}]") for i, v in enumerate(initiators)),
        chap=chap,
        mutual_chap=mutual,
        discovery_chap=_chap(section.get("discovery_chap"), "iscsi.discovery_chap"),
    )


def parse_tcmu(raw: object, schema: Section) -> TcmuConfig:
    """The `tcmu` section, with the product's defaults (its schema's `tcmu`)."""
    section = as_mapping(raw, "tcmu")
    p = "tcmu."
    reject_unknown(section, p, schema.names())
    d = schema.default
    return TcmuConfig(
        cmd_time_out=_int(section, p, "cmd_time_out", d("cmd_time_out"), 0, 7 * 24 * 3600),
        qfull_time_out=_int(section, p, "qfull_time_out", d("qfull_time_out"), 0, 3600),
        max_data_area_mb=_int(section, p, "max_data_area_mb", d("max_data_area_mb"), 8, 2048),
    )


@dataclass(frozen=True)
class DaemonKeys:
    """The top-level keys every Thur daemon shares, validated."""

    data_dir: Path
    admin_socket: Path
    instance: str
    admin_group: str | None = None
    lio_db_root: Path = Path(DEFAULT_LIO_DB_ROOT)


def parse_daemon_keys(top: dict[str, Any], schema: Section) -> DaemonKeys:
    """data_dir (required, absolute), admin_socket, admin_group, instance and
    lio_db_root, with the product's defaults from its schema."""
    data_dir = top.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir.startswith("/"):
        raise ConfigError("data_dir", data_dir, "an absolute path (required)")
    instance = top.get("instance", schema.default("instance"))
    if not isinstance(instance, str) or not re.fullmatch(r"[a-z][a-z0-9]{0,15}", instance):
        raise ConfigError("instance", instance, "1-16 lower-case letters and digits")
    socket = top.get("admin_socket", schema.default("admin_socket"))
    if not isinstance(socket, str) or not socket.startswith("/"):
        raise ConfigError("admin_socket", socket, "an absolute path")
    group = top.get("admin_group", schema.default("admin_group"))
    if group is not None:
        if not isinstance(group, str) or not group:
            raise ConfigError("admin_group", group, "a group name")
        try:
            grp.getgrnam(group)
        except KeyError:
            raise ConfigError("admin_group", group, "an existing group (see getent group)") \
                from None
    db_root = top.get("lio_db_root", schema.default("lio_db_root"))
    if not isinstance(db_root, str) or not db_root.startswith("/"):
        raise ConfigError("lio_db_root", db_root, "an absolute path")
    return DaemonKeys(Path(data_dir), Path(socket), instance, group, Path(db_root))


def parse_http(top: dict[str, Any], schema: Section) -> HttpConfig | None:
    """The `http` section: absent means the schema's defaults; `http: null` or
    `http: {enabled: false}` turns the endpoint off; `listen` is 'IP:PORT'."""
    if top.get("http", {}) is None:
        return None
    section = as_mapping(top.get("http"), "http")
    reject_unknown(section, "http.", schema.names())
    enabled = section.get("enabled", schema.default("enabled"))
    if not isinstance(enabled, bool):
        raise ConfigError("http.enabled", enabled, "true or false")
    if not enabled:
        return None
    listen = section.get("listen", schema.default("listen"))
    # A bare port is too easy to mistake for "all addresses": ask for both halves.
    if not isinstance(listen, str) or ":" not in listen:
        raise ConfigError("http.listen", listen, "an address 'IP:PORT', e.g. '0.0.0.0:9090'")
    return HttpConfig(_portal(listen, "http.listen"))


def parse_otlp(top: dict[str, Any], schema: Section) -> OtlpConfig | None:
    """The `otlp` section: None (no export) unless `endpoint` is set."""
    section = as_mapping(top.get("otlp"), "otlp")
    reject_unknown(section, "otlp.", schema.names())
    endpoint = section.get("endpoint", schema.default("endpoint"))
    if endpoint is None:
        return None
    if not isinstance(endpoint, str) or not re.match(r"^https?://[^/\s]+", endpoint):
        raise ConfigError("otlp.endpoint", endpoint,
                          "null, or an http(s) URL such as http://127.0.0.1:4318/v1/metrics")
    p = "otlp."
    headers = section.get("headers", schema.default("headers"))
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ConfigError("otlp.headers", "***", "a mapping of header names to strings")
    return OtlpConfig(
        endpoint=endpoint,
        interval=_int(section, p, "interval", schema.default("interval"), 1, 3600),
        timeout=_int(section, p, "timeout", schema.default("timeout"), 1, 300),
        headers=dict(headers),
    )


def read_yaml(path: Path) -> object:
    """A config file parsed as YAML, errors as ConfigError."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("--config", str(path), f"a readable file ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", str(path), f"valid YAML ({exc})") from None


def parse_vtl_config(raw: object) -> VtlConfig:
    """Validate a parsed YAML document into a VtlConfig."""
    top = as_mapping(raw, "<top level>")
    schema = VTL_SCHEMA
    reject_unknown(top, "", schema.names())
    # data_dir is checked first: it is the one key every file must have.
    if not isinstance(top.get("data_dir"), str) or not str(top["data_dir"]).startswith("/"):
        raise ConfigError("data_dir", top.get("data_dir"), "an absolute path (required)")
    if "library" not in top:
        raise ConfigError("library", None, "a mapping with num_slots, num_drives (required)")
    keys = parse_daemon_keys(top, schema)
    return VtlConfig(
        data_dir=keys.data_dir,
        library=_library(top["library"], schema.section("library")),
        iscsi=parse_iscsi(top.get("iscsi"), schema.section("iscsi")),
        tcmu=parse_tcmu(top.get("tcmu"), schema.section("tcmu")),
        admin_socket=keys.admin_socket,
        admin_group=keys.admin_group,
        instance=keys.instance,
        http=parse_http(top, schema.section("http")),
        otlp=parse_otlp(top, schema.section("otlp")),
        lio_db_root=keys.lio_db_root,
        backend=parse_backend(top.get("backend")),
        pool=parse_pool(top.get("pool")),
    )


def load_vtl_config(path: Path) -> VtlConfig:
    """Read and validate a thurvtld config file."""
    return parse_vtl_config(read_yaml(path))

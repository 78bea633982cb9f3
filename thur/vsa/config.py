"""Loading and validating thurvsad's YAML configuration (`thurvsa.yaml`).

    data_dir: /var/lib/thurvsa          # required: pool, bucket, volumes, ledger
    iscsi:                              # as in thurvtl.yaml; only the target name differs
      target_iqn: iqn.2026-11.io.thur:vsa
      listen: ["0.0.0.0:3260"]
      initiators: []                    # empty: any initiator (demo mode)
      chap: {userid: ..., password: ...}
      mutual_chap: {...}
      discovery_chap: {...}
    tcmu: {cmd_time_out: 30, qfull_time_out: 30, max_data_area_mb: 64}
    admin_socket: /run/thurvsa/admin.sock
    admin_group: thurvsa                # owner group of the socket (default: thurvsa if it exists)
    instance: thurvsa                   # prefix of our kernel object names
    http: {listen: "0.0.0.0:9091"}      # metrics and health; null turns it off
    lio_db_root: /var/lib/thur/lio      # LIO db_root, shared with thurvtld (one per host)
    transport: iscsi                    # iscsi, nvmetcp, or [iscsi, nvmetcp]
    nvme:                               # used when transport has nvmetcp
      subsystem_nqn: nqn.2026-11.io.thur:vsa
      listen: ["0.0.0.0:4420"]          # IPv6 as "[::1]:4420"
      hosts: []                         # empty: any host; else only these:
        - nqn: nqn.2014-08.org.nvmexpress:uuid:...
          dhchap_secret: "DHHC-1:00:...:"       # optional: the host must prove it
          dhchap_ctrl_secret: "DHHC-1:00:...:"  # optional: and we prove ours
          dhchap_hash: hmac(sha256)             # hmac(sha256|sha384|sha512)
          dhchap_dhgroup: null                  # null, ffdhe2048 ... ffdhe8192
      tls: false                        # TLS 1.3 + PSKs via tlshd (refused without it)
    backend: {kind: local}              # or s3/gcs/azure: thur/storage_config.py
    pool: {cache_size: auto}            # the local cache: thur/storage_config.py

The section parsers are thur/config.py's, shared with thurvtld; every error
names the key (secrets are never echoed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import configfs
from configfs.nvmet_model import DHCHAP_DHGROUPS, DHCHAP_HASHES
from thur.config import (
    DEFAULT_LIO_DB_ROOT,
    ConfigError,
    HttpConfig,
    IscsiConfig,
    Portal,
    TcmuConfig,
    parse_daemon_keys,
    parse_http,
    parse_iscsi,
    parse_otlp,
    parse_portal,
    parse_tcmu,
    read_yaml,
)
from thur.config_schema import VSA_SCHEMA, Section
from thur.configkit import as_mapping, reject_unknown
from thur.otlp import OtlpConfig
from thur.storage_config import BackendConfig, PoolSettings, parse_backend, parse_pool

DEFAULT_TARGET_IQN = "iqn.2026-11.io.thur:vsa"
DEFAULT_SOCKET = "/run/thurvsa/admin.sock"
DEFAULT_INSTANCE = "thurvsa"
# A disk command is short: the Linux SCSI layer gives up after 30 s and retries, so a
# command stuck in a ring for longer helps nobody (unlike tape, which needs hours).
TCMU_DEFAULTS = TcmuConfig(cmd_time_out=30, qfull_time_out=30, max_data_area_mb=64)
TRANSPORTS = ("iscsi", "nvmetcp")
DEFAULT_SUBSYSTEM_NQN = "nqn.2026-11.io.thur:vsa"
NVME_PORT = 4420
# thurvtld's is 9090: the two products can share a host.
DEFAULT_HTTP = HttpConfig(Portal("0.0.0.0", 9091))

__all__ = ["ConfigError", "NvmeConfig", "VsaConfig", "load_vsa_config", "parse_vsa_config"]


@dataclass(frozen=True)
class NvmeConfig:
    subsystem_nqn: str = DEFAULT_SUBSYSTEM_NQN
    listen: tuple[Portal, ...] = (Portal("0.0.0.0", NVME_PORT),)
    # Hosts allowed to connect, each with its DH-HMAC-CHAP secrets; empty: any host.
    hosts: tuple[configfs.NvmeHost, ...] = ()
    tls: bool = False


@dataclass(frozen=True)
class VsaConfig:
    data_dir: Path
    iscsi: IscsiConfig = field(default_factory=lambda: IscsiConfig(DEFAULT_TARGET_IQN))
    tcmu: TcmuConfig = TCMU_DEFAULTS
    admin_socket: Path = Path(DEFAULT_SOCKET)
    admin_group: str | None = None
    instance: str = DEFAULT_INSTANCE
    http: HttpConfig | None = DEFAULT_HTTP  # None: no HTTP endpoint
    otlp: OtlpConfig | None = None  # None: no OTLP export
    lio_db_root: Path = Path(DEFAULT_LIO_DB_ROOT)
    transports: tuple[str, ...] = ("iscsi",)
    nvme: NvmeConfig = field(default_factory=NvmeConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)  # default: local, no cloud
    pool: PoolSettings = field(default_factory=PoolSettings)

    @property
    def iscsi_enabled(self) -> bool:
        return "iscsi" in self.transports

    @property
    def nvme_enabled(self) -> bool:
        return "nvmetcp" in self.transports


def _transports(raw: object) -> tuple[str, ...]:
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values \
            or any(v not in TRANSPORTS for v in values) or len(set(values)) != len(values):
        raise ConfigError("transport", raw, "iscsi, nvmetcp, or a list of both")
    return tuple(values)


def _checked(key: str, shown: object, check: Any, *args: object) -> None:
    try:
        check(*args)
    except configfs.StateError as exc:
        raise ConfigError(key, shown, str(exc).split(": ", 1)[-1]) from None


def _host(raw: object, key: str, schema: Section) -> configfs.NvmeHost:
    fields = {f.name: f.default for f in schema.child("hosts").fields}
    section = as_mapping(raw, key)
    reject_unknown(section, key + ".", set(fields))
    nqn = section.get("nqn")
    _checked(key + ".nqn", nqn, configfs.check_nqn, nqn, "nqn")
    secrets: dict[str, str | None] = {}
    for name in ("dhchap_secret", "dhchap_ctrl_secret"):
        value = section.get(name)
        if value is not None:
            _checked(f"{key}.{name}", "***", configfs.check_dhchap_secret, value, name)
        secrets[name] = value
    if secrets["dhchap_ctrl_secret"] is not None and secrets["dhchap_secret"] is None:
        raise ConfigError(f"{key}.dhchap_ctrl_secret", "***",
                          "only together with dhchap_secret (bidirectional needs both)")
    if secrets["dhchap_ctrl_secret"] is not None \
            and secrets["dhchap_ctrl_secret"] == secrets["dhchap_secret"]:
        raise ConfigError(f"{key}.dhchap_ctrl_secret", "***", "a secret other than dhchap_secret")
    hash_ = section.get("dhchap_hash", fields["dhchap_hash"])
    if hash_ not in DHCHAP_HASHES:
        raise ConfigError(f"{key}.dhchap_hash", hash_,
                          ", ".join(DHCHAP_HASHES))
    # YAML reads a bare null as None.
    group = section.get("dhchap_dhgroup", fields["dhchap_dhgroup"]) or "null"
    if group not in DHCHAP_DHGROUPS:
        raise ConfigError(f"{key}.dhchap_dhgroup", group,
                          ", ".join(DHCHAP_DHGROUPS))
    return configfs.NvmeHost(nqn=nqn, dhchap_key=secrets["dhchap_secret"],
                             dhchap_ctrl_key=secrets["dhchap_ctrl_secret"],
                             dhchap_hash=hash_, dhchap_dhgroup=group)


def parse_nvme(raw: object, schema: Section) -> NvmeConfig:
    """The `nvme` section, with the defaults of `schema` (VSA_SCHEMA's `nvme`)."""
    section = as_mapping(raw, "nvme")
    reject_unknown(section, "nvme.", schema.names())
    nqn = section.get("subsystem_nqn", schema.default("subsystem_nqn"))
    _checked("nvme.subsystem_nqn", nqn, configfs.check_nqn, nqn, "subsystem_nqn")
    listen_raw = section.get("listen", schema.default("listen"))
    if isinstance(listen_raw, str):
        listen_raw = [listen_raw]
    if not isinstance(listen_raw, list) or not listen_raw:
        raise ConfigError("nvme.listen", listen_raw, "a non-empty list of 'IP:PORT'")
    listen = tuple(parse_portal(v, f"nvme.listen[{i}]", NVME_PORT)
                   for i, v in enumerate(listen_raw))
    if len(set(listen)) != len(listen):
        raise ConfigError("nvme.listen", listen_raw, "each address once")
    hosts_raw = section.get("hosts", schema.default("hosts"))
    if not isinstance(hosts_raw, list):
        raise ConfigError("nvme.hosts", hosts_raw, "a list of {nqn, dhchap_secret, ...}")
    hosts = tuple(_host(h, f"nvme.hosts[{i}]", schema) for i, h in enumerate(hosts_raw))
    if len({h.nqn for h in hosts}) != len(hosts):
        raise ConfigError("nvme.hosts", [h.nqn for h in hosts], "each host NQN once")
    tls = section.get("tls", schema.default("tls"))
    if not isinstance(tls, bool):
        raise ConfigError("nvme.tls", tls, "true or false")
    return NvmeConfig(subsystem_nqn=nqn, listen=listen, hosts=hosts, tls=tls)


def parse_vsa_config(raw: object) -> VsaConfig:
    """Validate a parsed YAML document into a VsaConfig."""
    top = as_mapping(raw, "<top level>")
    schema = VSA_SCHEMA
    reject_unknown(top, "", schema.names())
    keys = parse_daemon_keys(top, schema)
    return VsaConfig(
        data_dir=keys.data_dir,
        iscsi=parse_iscsi(top.get("iscsi"), schema.section("iscsi")),
        tcmu=parse_tcmu(top.get("tcmu"), schema.section("tcmu")),
        admin_socket=keys.admin_socket,
        admin_group=keys.admin_group,
        instance=keys.instance,
        http=parse_http(top, schema.section("http")),
        otlp=parse_otlp(top, schema.section("otlp")),
        lio_db_root=keys.lio_db_root,
        transports=_transports(top.get("transport", schema.default("transport"))),
        nvme=parse_nvme(top.get("nvme"), schema.section("nvme")),
        backend=parse_backend(top.get("backend")),
        pool=parse_pool(top.get("pool")),
    )


def load_vsa_config(path: Path) -> VsaConfig:
    """Read and validate a thurvsad config file."""
    return parse_vsa_config(read_yaml(path))

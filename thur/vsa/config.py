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

The section parsers are thur/config.py's, shared with thurvtld; every error
names the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from thur.config import (
    DEFAULT_LIO_DB_ROOT,
    ConfigError,
    HttpConfig,
    IscsiConfig,
    Portal,
    TcmuConfig,
    as_mapping,
    parse_daemon_keys,
    parse_http,
    parse_iscsi,
    parse_tcmu,
    read_yaml,
    reject_unknown,
)

DEFAULT_TARGET_IQN = "iqn.2026-11.io.thur:vsa"
DEFAULT_SOCKET = "/run/thurvsa/admin.sock"
DEFAULT_INSTANCE = "thurvsa"
# A disk command is short: the Linux SCSI layer gives up after 30 s and retries, so a
# command stuck in a ring for longer helps nobody (unlike tape, which needs hours).
TCMU_DEFAULTS = TcmuConfig(cmd_time_out=30, qfull_time_out=30, max_data_area_mb=64)
TOP_KEYS = {
    "data_dir", "iscsi", "tcmu", "admin_socket", "admin_group", "instance", "http", "lio_db_root"
}
# thurvtld's is 9090: the two products can share a host.
DEFAULT_HTTP = HttpConfig(Portal("0.0.0.0", 9091))

__all__ = ["ConfigError", "VsaConfig", "load_vsa_config", "parse_vsa_config"]


@dataclass(frozen=True)
class VsaConfig:
    data_dir: Path
    iscsi: IscsiConfig = field(default_factory=lambda: IscsiConfig(DEFAULT_TARGET_IQN))
    tcmu: TcmuConfig = TCMU_DEFAULTS
    admin_socket: Path = Path(DEFAULT_SOCKET)
    admin_group: str | None = None
    instance: str = DEFAULT_INSTANCE
    http: HttpConfig | None = DEFAULT_HTTP  # None: no HTTP endpoint
    lio_db_root: Path = Path(DEFAULT_LIO_DB_ROOT)


def parse_vsa_config(raw: object) -> VsaConfig:
    """Validate a parsed YAML document into a VsaConfig."""
    top = as_mapping(raw, "<top level>")
    reject_unknown(top, "", TOP_KEYS)
    keys = parse_daemon_keys(top, default_socket=DEFAULT_SOCKET, default_instance=DEFAULT_INSTANCE)
    return VsaConfig(
        data_dir=keys.data_dir,
        iscsi=parse_iscsi(top.get("iscsi"), default_iqn=DEFAULT_TARGET_IQN),
        tcmu=parse_tcmu(top.get("tcmu"), defaults=TCMU_DEFAULTS),
        admin_socket=keys.admin_socket,
        admin_group=keys.admin_group,
        instance=keys.instance,
        http=parse_http(top, default=DEFAULT_HTTP),
        lio_db_root=keys.lio_db_root,
    )


def load_vsa_config(path: Path) -> VsaConfig:
    """Read and validate a thurvsad config file."""
    return parse_vsa_config(read_yaml(path))

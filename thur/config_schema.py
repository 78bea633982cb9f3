"""The one list of configuration keys: names, defaults and meanings.

The loaders (thur/config.py, thur/vsa/config.py, thur/storage_config.py) take
their known keys and their defaults from here, and `thurvtl config defaults` /
`thurvsa config defaults` print this same tree as annotated YAML, so the
reference an admin reads cannot drift from what the daemon accepts (a unit
test loads that output back). The per-kind cloud keys come from the backends'
own option dataclasses (thur/cloud), with their meanings in BACKEND_DOCS.

Defaults are written in their YAML form ("0.0.0.0:3260", "16M", null), the
way an admin writes them; the loaders parse them like any other value.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import yaml

from thur.cloud.azure import AzureOptions
from thur.cloud.gcs import GcsOptions
from thur.cloud.s3 import S3Options

# A key the file must set; the schema shows an example instead of a default.
REQUIRED = "(required)"
COMMENT_COLUMN = 42
CLOUD_OPTIONS: dict[str, type] = {"s3": S3Options, "gcs": GcsOptions, "azure": AzureOptions}

# One line per field of each kind's options dataclass (a test checks none is missing).
BACKEND_DOCS: dict[str, str] = {
    "bucket": "the bucket (must exist; `system cloud check` tests it)",
    "container": "the blob container (must exist)",
    "prefix": "object name prefix, so several libraries can share one bucket",
    "endpoint_url": "S3-compatible service (MinIO, Wasabi, SeaweedFS, B2...); null: AWS",
    "region": "null: the SDK's default",
    "path_style": "path-style URLs (most S3-compatible services want true)",
    "access_key_id": "null (with the secret): boto3's default credential chain",
    "secret_access_key": "secret; never logged",
    "session_token": "temporary credentials only",
    "max_connections": "HTTP connection pool size",
    "connect_timeout": "seconds to open a connection",
    "read_timeout": "seconds to wait for a response",
    "timeout": "seconds one request may take",
    "list_page_size": "objects per list call (the service maximum)",
    "project": "null: the credentials' project",
    "credentials_file": "service-account JSON; null: application default credentials",
    "endpoint": "an emulator such as fake-gcs-server; null: Google",
    "connection_string": "account connection string (or account_url + credential)",
    "account_url": "https://<account>.blob.core.windows.net",
    "credential": "account key or SAS token (with account_url)",
}


@dataclass(frozen=True)
class Key:
    """One key. `fields` documents the keys of a mapping value (or of each list item)."""

    name: str
    default: Any
    doc: str
    fields: tuple[Key, ...] = ()


@dataclass(frozen=True)
class Section:
    """A mapping of keys; `notes` are comment lines printed after its keys."""

    name: str
    doc: str
    keys: tuple[Key | Section, ...]
    notes: tuple[tuple[str, str], ...] = ()  # (text, meaning) comment lines

    def names(self) -> set[str]:
        return {k.name for k in self.keys}

    def child(self, name: str) -> Key | Section:
        for k in self.keys:
            if k.name == name:
                return k
        raise KeyError(name)

    def default(self, name: str) -> Any:
        key = self.child(name)
        if isinstance(key, Section):
            return key.defaults()
        return key.default

    def section(self, name: str) -> Section:
        sub = self.child(name)
        if not isinstance(sub, Section):
            raise KeyError(name)
        return sub

    def defaults(self) -> dict[str, Any]:
        """The YAML mapping `config defaults` prints (required keys with their example)."""
        return {k.name: k.defaults() if isinstance(k, Section) else k.default for k in self.keys}

    def paths(self, prefix: str = "") -> list[str]:
        """Every dotted key path (keys of sections and of mapping values)."""
        out = []
        for k in self.keys:
            if isinstance(k, Section):
                out.extend(k.paths(f"{prefix}{k.name}."))
                continue
            out.append(prefix + k.name)
            out.extend(f"{prefix}{k.name}.{f.name}" for f in k.fields)
        return out


# --- the sections, each built with the product's own defaults -------------------------


def daemon_keys(product: str) -> tuple[Key, ...]:
    return (
        Key("data_dir", f"/var/lib/{product}",
            f"{REQUIRED} absolute path: cache, local bucket, ledger, audit log"),
        Key("admin_socket", f"/run/{product}/admin.sock", "the admin API socket (mode 0660)"),
        Key("admin_group", None,
            f"group owning the socket; null: {product} if it exists, else the daemon's"),
        Key("instance", product, "prefix of our kernel object names ([a-z][a-z0-9]{0,15})"),
        Key("lio_db_root", "/var/lib/thur/lio",
            "LIO db_root (APTPL reservations): one per host, shared by both daemons"),
    )


CHAP_FIELDS = (
    Key("userid", REQUIRED, "user name"),
    Key("password", REQUIRED, "secret of 12 to 16 characters (LIO limit)"),
)


def iscsi_section(target_iqn: str) -> Section:
    return Section("iscsi", "the iSCSI target", (
        Key("target_iqn", target_iqn, "the target's iSCSI name"),
        Key("listen", ["0.0.0.0:3260"], "portals 'IP:PORT' (IPv6 as '[::1]:3260')"),
        Key("initiators", [], "initiator IQNs allowed to log in; empty: any (demo mode)"),
        Key("chap", None, "initiators must authenticate: {userid, password}", CHAP_FIELDS),
        Key("mutual_chap", None, "the target authenticates back (needs chap)", CHAP_FIELDS),
        Key("discovery_chap", None, "CHAP for SendTargets discovery", CHAP_FIELDS),
    ))


def tcmu_section(cmd_time_out: int, why: str) -> Section:
    return Section("tcmu", "the kernel's TCMU ring of each LU", (
        Key("cmd_time_out", cmd_time_out, f"seconds the kernel waits for one command ({why})"),
        Key("qfull_time_out", 30, "seconds a command may wait for ring space"),
        Key("max_data_area_mb", 64, "data area per LU, 8 to 2048 MiB"),
    ))


def http_section(port: int) -> Section:
    return Section("http", "/health /metrics /sessions /info; `http: null` turns it off", (
        Key("listen", f"0.0.0.0:{port}", "address 'IP:PORT'"),
        Key("enabled", True, "false turns the endpoint off"),
    ))


def _kind_notes() -> tuple[tuple[str, str], ...]:
    notes = [("Other kinds take these keys instead of path and fsync:", "")]
    for kind, cls in CLOUD_OPTIONS.items():
        notes.append((f"kind: {kind}", ""))
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            value = REQUIRED if required else yaml_value(f.default)
            notes.append((f"  {f.name}: {value}", BACKEND_DOCS[f.name]))
    return tuple(notes)


def otlp_section() -> Section:
    return Section("otlp", "metrics over OTLP/HTTP too (needs pip install 'thur[otlp]')", (
        Key("endpoint", None, "collector URL, e.g. http://127.0.0.1:4318/v1/metrics; null: off"),
        Key("interval", 60, "seconds between exports, 1 to 3600"),
        Key("timeout", 10, "seconds one export may take, 1 to 300"),
        Key("headers", {}, "HTTP headers sent with each export (e.g. an API key)"),
    ))


def backend_section() -> Section:
    return Section("backend", "where the durable copy lives: the source of truth", (
        Key("kind", "local", "local | s3 | gcs | azure"),
        Key("path", None, "kind local: the directory; null: <data_dir>/bucket"),
        Key("fsync", True, "kind local: fsync each object (false only for tests)"),
    ), notes=_kind_notes())


def pool_section() -> Section:
    return Section("pool", "the local cache (warm copy) and the uploader", (
        Key("cache_size", "auto",
            "budget: auto (80% of free disk + pool, >= 1G) or a size >= 64M"),
        Key("disk_free_floor", "1G", "a write never takes free disk space below this"),
        Key("max_wait", 300, "seconds a writer waits for room before NOT READY 04/07"),
        Key("compression", "zstd", "zstd | lz4 | none, per chunk (old chunks stay readable)"),
        Key("zstd_level", 3, "1 to 22"),
        Key("pack_size", "16M", "target size of packs uploaded to a cloud (1M to 1G)"),
        Key("upload_workers", None, "parallel transfers, 1 to 256; null: min(16, 4 x cores)"),
    ))


def library_section() -> Section:
    return Section("library", f"{REQUIRED} the emulated SCSI library", (
        Key("num_slots", 24, "storage slots, 1 to 65535"),
        Key("num_mail_slots", 4, "import/export elements, 0 to 65535"),
        Key("num_drives", 2, "LTO-8 drives, 1 to 255"),
        Key("lto_generation", 8, "only 8"),
    ))


NVME_HOST_FIELDS = (
    Key("nqn", REQUIRED, "the host's NQN"),
    Key("dhchap_secret", None, "DHHC-1 secret: the host must prove it"),
    Key("dhchap_ctrl_secret", None, "DHHC-1 secret: the target proves it back"),
    Key("dhchap_hash", "hmac(sha256)", "hmac(sha256) | hmac(sha384) | hmac(sha512)"),
    Key("dhchap_dhgroup", None, "null | ffdhe2048 ... ffdhe8192"),
)


def nvme_section() -> Section:
    return Section("nvme", "the NVMe/TCP subsystem (when transport has nvmetcp)", (
        Key("subsystem_nqn", "nqn.2026-11.io.thur:vsa", "the subsystem's NQN"),
        Key("listen", ["0.0.0.0:4420"], "ports 'IP:PORT' (IPv6 as '[::1]:4420')"),
        Key("hosts", [], "hosts allowed to connect; empty: any. Each item:", NVME_HOST_FIELDS),
        Key("tls", False, "TLS 1.3 with PSKs via tlshd (refused at start without it)"),
    ))


def vtl_schema() -> Section:
    keys = daemon_keys("thurvtl")
    return Section("", "thurvtl.yaml", (
        keys[0], library_section(), iscsi_section("iqn.2026-11.io.thur:vtl"),
        tcmu_section(4 * 3600, "tape operations run for hours"),
        *keys[1:], http_section(9090), otlp_section(), backend_section(), pool_section(),
    ))


def vsa_schema() -> Section:
    keys = daemon_keys("thurvsa")
    return Section("", "thurvsa.yaml", (
        keys[0],
        Key("transport", "iscsi", "iscsi | nvmetcp | [iscsi, nvmetcp]"),
        iscsi_section("iqn.2026-11.io.thur:vsa"), nvme_section(),
        tcmu_section(30, "a disk initiator retries after 30 s"),
        *keys[1:], http_section(9091), otlp_section(), backend_section(), pool_section(),
    ))


# --- rendering -------------------------------------------------------------------------


def yaml_value(value: Any) -> str:
    """One value in YAML flow style, quoted only where YAML would misread it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    plain_ok = text and "," not in text and "#" not in text and not text.startswith(("[", "{"))
    return text if plain_ok and yaml.safe_load(text) == text else json.dumps(text)


def _line(indent: str, text: str, doc: str) -> str:
    return f"{indent}{text}".ljust(COMMENT_COLUMN - 1) + f" # {doc}"


def _render(section: Section, indent: str, out: list[str]) -> None:
    for key in section.keys:
        if isinstance(key, Section):
            out.append(_line(indent, f"{key.name}:", key.doc))
            _render(key, indent + "  ", out)
            continue
        out.append(_line(indent, f"{key.name}: {yaml_value(key.default)}", key.doc))
        for f in key.fields:
            out.append(_line(indent + "#   ", f"{f.name}: {yaml_value(f.default)}", f.doc))
    for text, doc in section.notes:
        out.append(_line(indent + "# ", text, doc) if doc else f"{indent}# {text}")


def render(schema: Section, product: str) -> str:
    """The annotated reference `<product> config defaults` prints."""
    out = [
        f"# {schema.doc}: every key with its default (`{product} config defaults`).",
        f"# Keys marked {REQUIRED} have no default: the value shown is an example.",
        "# Indented comments under a key list the keys of its value.",
        "",
    ]
    _render(schema, "", out)
    return "\n".join(out) + "\n"


VTL_SCHEMA = vtl_schema()
VSA_SCHEMA = vsa_schema()

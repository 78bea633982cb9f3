"""The storage sections both daemons share (`backend`, `pool`), and the tier built from them.

    backend:                      # absent: a directory under data_dir (no cloud needed)
      kind: s3                    # local | s3 | gcs | azure
      bucket: thur-backups        # the kind's own keys (docs/CONFIGURATION.md lists them)
      endpoint_url: https://s3.example.net
    pool:
      cache_size: auto            # local cache budget: auto (80% of free disk, >= 1 GiB) or 200G
      disk_free_floor: 1G         # never take the file system's free space below this
      max_wait: 300               # seconds a writer waits for room before NOT READY
      compression: zstd           # zstd | lz4 | none (per chunk; old chunks stay readable)
      zstd_level: 3
      pack_size: 16M              # bytes per pack uploaded to a cloud backend
      upload_workers: null        # null: min(16, 4 x cores)

The backend keys are checked against the kind's own options (thur/cloud:
S3Options, GcsOptions, AzureOptions), so a typo is an error naming the key,
at load, before anything connects. Secrets may come from the config file or,
left out, from each SDK's default credential chain.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thur.cloud import LocalBackend, PackIndex, TierConfig, TieredPool
from thur.cloud.factory import KINDS, open_backend
from thur.config_schema import CLOUD_OPTIONS, backend_section, pool_section
from thur.configkit import ConfigError, as_mapping, reject_unknown
from thur.pool import LocalStore, PoolConfig
from thur.pool.codec import Codec, CompressionPolicy

GiB = 1 << 30
MiB = 1 << 20
BACKEND = backend_section()
POOL = pool_section()
SIZE = re.compile(r"(\d+)\s*([KMGTP]?)(i?B)?", re.IGNORECASE)
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
SECRET_KEYS = {"secret_access_key", "session_token", "credential", "connection_string"}


class StorageUnavailable(RuntimeError):
    """The backend failed its start-up check; the daemon refuses to start."""


@dataclass(frozen=True)
class BackendConfig:
    """Where the durable copy lives. `options` are the kind's own keys, checked."""

    kind: str = "local"
    options: Mapping[str, Any] = field(default_factory=dict)

    def open(self, data_dir: Path) -> Any:
        if self.kind == "local":
            opts = dict(self.options)
            path = Path(opts.pop("path", None) or data_dir / "bucket")
            path.mkdir(parents=True, exist_ok=True)
            return LocalBackend(path, **opts)
        return open_backend(self.kind, self.options)


@dataclass(frozen=True)
class PoolSettings:
    """The local cache and the uploader (defaults as in thur/pool and thur/cloud)."""

    cache_size: int | None = None  # None: auto
    disk_free_floor: int = 1 * GiB
    max_wait: float = 300.0
    compression: str = "zstd"
    zstd_level: int = 3
    pack_size: int = 16 * MiB
    upload_workers: int | None = None


def parse_size(value: object, key: str) -> int:
    """A byte count: an integer, or '200G', '512MiB', '1T' (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := SIZE.fullmatch(value.strip())):
        return int(m[1]) * UNITS[m[2].upper()]
    raise ConfigError(key, value, "a size in bytes, e.g. 1073741824, 512M or 200G")


def parse_backend(raw: object) -> BackendConfig:
    if raw is None:
        return BackendConfig()
    section = as_mapping(raw, "backend")
    kind = section.get("kind", BACKEND.default("kind"))
    if kind not in KINDS:
        raise ConfigError("backend.kind", kind, f"one of {', '.join(KINDS)}")
    opts = {k: v for k, v in section.items() if k != "kind"}
    if kind == "local":
        reject_unknown(section, "backend.", BACKEND.names())
        path = opts.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise ConfigError("backend.path", path, "an absolute path")
        if not isinstance(opts.get("fsync", BACKEND.default("fsync")), bool):
            raise ConfigError("backend.fsync", opts["fsync"], "true or false")
        # A key written out with its default value means the same as leaving it out.
        return BackendConfig(kind, {k: v for k, v in opts.items() if v != BACKEND.default(k)})
    return BackendConfig(kind, _check_options(CLOUD_OPTIONS[kind], opts))


def _check_options(cls: type, opts: dict[str, Any]) -> dict[str, Any]:
    """Names and types against the kind's options dataclass, before anything connects."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    reject_unknown(opts, "backend.", set(fields) | {"kind"})
    for name, f in fields.items():
        if name not in opts:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"backend.{name}", None, "required for this backend kind")
            continue
        if not _fits(opts[name], hints[name]):
            shown = "***" if name in SECRET_KEYS else opts[name]
            raise ConfigError(f"backend.{name}", shown, _describe(hints[name]))
    return opts


def _describe(hint: Any) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", float: "a number"}
    parts = [names.get(h, str(h)) for h in typing.get_args(hint) if h is not type(None)]
    if parts:
        return " or ".join(parts) + " (or null)"
    return names.get(hint, str(hint))


def _fits(value: object, hint: Any) -> bool:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def parse_pool(raw: object) -> PoolSettings:
    section = as_mapping(raw, "pool")
    reject_unknown(section, "pool.", POOL.names())
    d = POOL.default
    cache = section.get("cache_size", d("cache_size"))
    cache_size = None if cache in ("auto", None) else parse_size(cache, "pool.cache_size")
    if cache_size is not None and cache_size < 64 * MiB:
        raise ConfigError("pool.cache_size", cache, "auto, or at least 64M")
    compression = section.get("compression", d("compression"))
    if compression not in ("zstd", "lz4", "none"):
        raise ConfigError("pool.compression", compression, "zstd, lz4 or none")
    level = section.get("zstd_level", d("zstd_level"))
    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
        raise ConfigError("pool.zstd_level", level, "an integer from 1 to 22")
    max_wait = section.get("max_wait", d("max_wait"))
    if isinstance(max_wait, bool) or not isinstance(max_wait, (int, float)) or max_wait <= 0:
        raise ConfigError("pool.max_wait", max_wait, "a number of seconds > 0")
    pack = parse_size(section.get("pack_size", d("pack_size")), "pool.pack_size")
    if not 1 * MiB <= pack <= 1 * GiB:
        raise ConfigError("pool.pack_size", section.get("pack_size"), "from 1M to 1G")
    workers = section.get("upload_workers", d("upload_workers"))
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256
    ):
        raise ConfigError("pool.upload_workers", workers, "null, or an integer from 1 to 256")
    return PoolSettings(
        cache_size=cache_size,
        disk_free_floor=parse_size(
            section.get("disk_free_floor", d("disk_free_floor")), "pool.disk_free_floor"
        ),
        max_wait=float(max_wait),
        compression=compression,
        zstd_level=level,
        pack_size=pack,
        upload_workers=workers,
    )


def build_tier(
    data_dir: Path, backend: BackendConfig | None = None, pool: PoolSettings | None = None
) -> tuple[Any, TieredPool]:
    """The backend and the tiered pool of one daemon, as configured (not started)."""
    pool = pool or PoolSettings()
    pool_dir = data_dir / "pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    store = LocalStore(
        PoolConfig(
            pool_dir,
            budget_bytes=pool.cache_size,
            disk_free_floor=pool.disk_free_floor,
            max_wait=pool.max_wait,
            compression=CompressionPolicy(Codec[pool.compression.upper()], pool.zstd_level),
        )
    )
    tier_cfg = TierConfig(pack_target=pool.pack_size)
    if pool.upload_workers is not None:
        tier_cfg = dataclasses.replace(tier_cfg, workers=pool.upload_workers)
    opened = (backend or BackendConfig()).open(data_dir)
    return opened, TieredPool(store, opened, PackIndex(pool_dir / "index.sqlite"), tier_cfg)

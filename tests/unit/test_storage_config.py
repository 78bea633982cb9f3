"""The `backend` and `pool` sections both daemons share: every bad value names its key,
and the defaults build a local tier under data_dir (no cloud needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from thur.cloud import LocalBackend
from thur.config import ConfigError, parse_vtl_config
from thur.storage_config import (
    BackendConfig,
    PoolSettings,
    build_tier,
    parse_backend,
    parse_pool,
    parse_size,
)
from thur.vsa.config import parse_vsa_config

GiB = 1 << 30


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"kind": "nfs"}, "backend.kind"),
        ({"kind": "s3"}, "backend.bucket"),  # required for the kind
        ({"kind": "s3", "bucket": "b", "bukket": "c"}, "backend.bukket"),
        ({"kind": "s3", "bucket": "b", "path_style": "yes"}, "backend.path_style"),
        ({"kind": "s3", "bucket": "b", "max_connections": 1.5}, "backend.max_connections"),
        ({"kind": "gcs", "bucket": 7}, "backend.bucket"),
        ({"kind": "azure", "prefix": "p"}, "backend.container"),
        ({"kind": "local", "path": "relative"}, "backend.path"),
        ({"kind": "local", "bucket": "b"}, "backend.bucket"),
        ({"kind": "local", "fsync": "no"}, "backend.fsync"),
    ],
)
def test_bad_backend_values_name_their_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_backend(section)
    assert err.value.key == key


def test_a_secret_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        parse_backend({"kind": "s3", "bucket": "b", "secret_access_key": 12345})
    assert "12345" not in str(err.value) and "***" in str(err.value)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"cache_size": "lots"}, "pool.cache_size"),
        ({"cache_size": "1M"}, "pool.cache_size"),
        ({"compression": "gzip"}, "pool.compression"),
        ({"zstd_level": 0}, "pool.zstd_level"),
        ({"max_wait": 0}, "pool.max_wait"),
        ({"pack_size": "2G"}, "pool.pack_size"),
        ({"upload_workers": 0}, "pool.upload_workers"),
        ({"disk_free_floor": -1}, "pool.disk_free_floor"),
        ({"surprise": 1}, "pool.surprise"),
    ],
)
def test_bad_pool_values_name_their_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_pool(section)
    assert err.value.key == key


def test_sizes_are_binary() -> None:
    assert parse_size("200G", "k") == 200 * GiB
    assert parse_size("512MiB", "k") == 512 << 20
    assert parse_size(4096, "k") == 4096
    assert parse_pool({"cache_size": "auto"}).cache_size is None
    assert parse_pool({"cache_size": "100G", "compression": "lz4"}) == PoolSettings(
        cache_size=100 * GiB, compression="lz4"
    )


def test_both_daemons_accept_the_sections_and_default_to_local() -> None:
    vtl = parse_vtl_config({"data_dir": "/d", "library": {"num_slots": 4, "num_drives": 1}})
    vsa = parse_vsa_config({"data_dir": "/d"})
    assert vtl.backend == vsa.backend == BackendConfig()
    assert vtl.pool == vsa.pool == PoolSettings()
    s3 = {"kind": "s3", "bucket": "b", "endpoint_url": "http://127.0.0.1:8333"}
    assert parse_vsa_config({"data_dir": "/d", "backend": s3}).backend.options["bucket"] == "b"
    with pytest.raises(ConfigError) as err:
        parse_vtl_config({"data_dir": "/d", "library": {"num_slots": 4, "num_drives": 1},
                          "pool": {"compression": "rar"}})
    assert err.value.key == "pool.compression"


def test_the_default_tier_is_a_directory_under_data_dir(tmp_path: Path) -> None:
    backend, tier = build_tier(tmp_path, None, PoolSettings(cache_size=2 * GiB))
    try:
        assert isinstance(backend, LocalBackend)
        assert (tmp_path / "bucket").is_dir() and (tmp_path / "pool").is_dir()
    finally:
        tier.close()
    elsewhere = tmp_path / "elsewhere"
    backend, tier = build_tier(tmp_path, BackendConfig("local", {"path": str(elsewhere)}))
    try:
        assert elsewhere.is_dir()
    finally:
        tier.close()

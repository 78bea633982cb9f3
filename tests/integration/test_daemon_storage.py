"""The daemons' `backend` config section against real object stores: a thurvsa.yaml
naming S3 (SeaweedFS), GCS (fake-gcs-server) or Azure (Azurite) builds the tier the
daemon runs on, and an empty machine with the same file gets every volume back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.conftest import Target
from thur.config import ConfigError
from thur.vsa.config import parse_vsa_config
from thur.vsa.storage import StorageUnavailable, VsaStorage

MiB = 1 << 20


def config(target: Target, data_dir: Path, **overrides: object) -> dict[str, object]:
    assert target.server is not None
    backend = {"kind": target.kind, **target.server.options(prefix=target.prefix), **overrides}
    return {"data_dir": str(data_dir), "backend": backend, "pool": {"pack_size": "1M"}}


def storage(raw: dict[str, object]) -> VsaStorage:
    cfg = parse_vsa_config(raw)
    return VsaStorage(cfg.data_dir, backend=cfg.backend, pool=cfg.pool)


def test_a_configured_cloud_backend_is_the_source_of_truth(
    cloud_target: Target, tmp_path: Path
) -> None:
    first = storage(config(cloud_target, tmp_path / "a"))
    first.start()
    vol = first.volumes.create("vol1", 8 * MiB)
    data = os.urandom(2 * MiB)
    vol.write(16, data)
    vol.flush()
    first.volumes.replicate()
    first.shutdown()

    empty = storage(config(cloud_target, tmp_path / "b"))  # a new machine, same file
    empty.start()
    assert empty.volumes.open("vol1").read(16, len(data) // 4096) == data
    empty.shutdown()


def test_a_wrong_bucket_refuses_the_start_with_the_reason(
    cloud_target: Target, tmp_path: Path
) -> None:
    field = "container" if cloud_target.kind == "azure" else "bucket"
    bad = storage(config(cloud_target, tmp_path / "a", **{field: "no-such-bucket-thur"}))
    with pytest.raises(StorageUnavailable) as err:
        bad.start()
    assert "no-such-bucket-thur" in str(err.value)
    bad.tier.close()


def test_a_typo_in_the_backend_section_names_the_key(
    cloud_target: Target, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_vsa_config(config(cloud_target, tmp_path, buckett="x"))
    assert err.value.key == "backend.buckett"

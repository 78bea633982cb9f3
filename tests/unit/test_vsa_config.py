"""thurvsa.yaml validation: defaults, and every bad input names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from thur.config import ConfigError
from thur.vsa.config import load_vsa_config, parse_vsa_config

MINIMAL = {"data_dir": "/var/lib/thurvsa"}


def test_minimal_config_gets_defaults() -> None:
    cfg = parse_vsa_config(MINIMAL)
    assert cfg.data_dir == Path("/var/lib/thurvsa")
    assert cfg.iscsi.target_iqn == "iqn.2026-11.io.thur:vsa"
    assert str(cfg.iscsi.listen[0]) == "0.0.0.0:3260"
    assert cfg.iscsi.initiators == () and cfg.iscsi.chap is None
    assert cfg.admin_socket == Path("/run/thurvsa/admin.sock")
    assert cfg.instance == "thurvsa"
    # Disk commands are short: the defaults are not tape's hours.
    assert cfg.tcmu.cmd_time_out == 30 and cfg.tcmu.max_data_area_mb == 64


def test_full_config() -> None:
    cfg = parse_vsa_config({
        "data_dir": "/srv/vsa",
        "iscsi": {
            "target_iqn": "iqn.2026-11.com.example:disks",
            "listen": ["127.0.0.1:3261", "[::1]:3260"],
            "initiators": ["iqn.2026-11.com.example:host1"],
            "chap": {"userid": "host", "password": "s3cret-pass-16ch"},
            "mutual_chap": {"userid": "target", "password": "target-pass-16ch"},
            "discovery_chap": {"userid": "disc", "password": "disc-pass-12"},
        },
        "tcmu": {"cmd_time_out": 60, "qfull_time_out": 5, "max_data_area_mb": 128},
        "admin_socket": "/run/x/admin.sock",
        "instance": "vsa2",
    })
    assert cfg.iscsi.target_iqn == "iqn.2026-11.com.example:disks"
    assert [str(p) for p in cfg.iscsi.listen] == ["127.0.0.1:3261", "[::1]:3260"]
    assert cfg.iscsi.mutual_chap is not None and cfg.iscsi.mutual_chap.userid == "target"
    assert cfg.iscsi.discovery_chap is not None
    assert (cfg.tcmu.cmd_time_out, cfg.tcmu.qfull_time_out, cfg.tcmu.max_data_area_mb) == (
        60, 5, 128)
    assert cfg.instance == "vsa2" and cfg.admin_socket == Path("/run/x/admin.sock")


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"data_dir": None}, "data_dir"),
        ({"data_dir": "relative"}, "data_dir"),
        ({"iscsi": {"listen": ["nowhere:3260"]}}, "iscsi.listen[0]"),
        ({"iscsi": {"target_iqn": "not-an-iqn"}}, "iscsi.target_iqn"),
        ({"iscsi": {"chap": {"userid": "u", "password": "short"}}}, "iscsi.chap.password"),
        ({"iscsi": {"mutual_chap": {"userid": "u", "password": "123456789012"}}},
         "iscsi.mutual_chap"),
        ({"iscsi": {"initiators": ["bogus"]}}, "iscsi.initiators[0]"),
        ({"iscsi": {"portal": "x"}}, "iscsi.portal"),
        ({"tcmu": {"cmd_time_out": -1}}, "tcmu.cmd_time_out"),
        ({"tcmu": {"max_data_area_mb": 4}}, "tcmu.max_data_area_mb"),
        ({"admin_socket": "rel.sock"}, "admin_socket"),
        ({"instance": "Bad_Name"}, "instance"),
        ({"lio_db_root": "relative/lio"}, "lio_db_root"),
        ({"library": {"num_slots": 4}}, "library"),  # a VTL key is unknown here
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_values_name_their_key(patch: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_vsa_config({**MINIMAL, **patch})
    assert err.value.key == key
    assert f"'{key}'" in str(err.value)


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError) as err:
        parse_vsa_config(["data_dir"])
    assert err.value.key == "<top level>"


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "thurvsa.yaml"
    path.write_text("data_dir: /var/lib/thurvsa\niscsi:\n  listen: 127.0.0.1:3260\n")
    assert str(load_vsa_config(path).iscsi.listen[0]) == "127.0.0.1:3260"
    path.write_text("data_dir: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_vsa_config(path)
    assert err.value.key == "<file>"
    with pytest.raises(ConfigError) as err:
        load_vsa_config(tmp_path / "missing.yaml")
    assert err.value.key == "--config"

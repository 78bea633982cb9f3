"""Config validation: every bad input names its key."""

from pathlib import Path

import pytest

from thur.config import ConfigError, load_vtl_config, parse_vtl_config

MINIMAL = {"data_dir": "/var/lib/thurvtl", "library": {"num_slots": 10, "num_drives": 2}}


def test_minimal_config_gets_defaults() -> None:
    cfg = parse_vtl_config(MINIMAL)
    assert cfg.data_dir == Path("/var/lib/thurvtl")
    assert cfg.library.num_slots == 10
    assert cfg.library.num_mail_slots == 4
    assert cfg.iscsi.target_iqn.startswith("iqn.")
    assert str(cfg.iscsi.listen[0]) == "0.0.0.0:3260"
    assert cfg.iscsi.chap is None


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"data_dir": "relative"}, "data_dir"),
        ({"library": {"num_slots": 70000, "num_drives": 1}}, "library.num_slots"),
        ({"library": {"num_slots": 10, "num_drives": 256}}, "library.num_drives"),
        ({"library": {"num_slots": 10, "num_drives": True}}, "library.num_drives"),
        ({"library": {"num_slots": 10, "lto_generation": 9}}, "library.lto_generation"),
        ({"library": {"num_slots": 10, "colour": "red"}}, "library.colour"),
        ({"iscsi": {"listen": ["nowhere:3260"]}}, "iscsi.listen[0]"),
        ({"iscsi": {"listen": ["127.0.0.1:99999"]}}, "iscsi.listen[0]"),
        ({"iscsi": {"target_iqn": "not-an-iqn"}}, "iscsi.target_iqn"),
        ({"iscsi": {"chap": {"userid": "u", "password": "short"}}}, "iscsi.chap.password"),
        ({"iscsi": {"chap": {"password": "123456789012"}}}, "iscsi.chap.userid"),
        ({"iscsi": {"initiators": ["bogus"]}}, "iscsi.initiators[0]"),
        ({"tcmu": {"cmd_time_out": -1}}, "tcmu.cmd_time_out"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_values_name_the_key(patch: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_vtl_config({**MINIMAL, **patch})
    assert err.value.key == key
    assert f"'{key}'" in str(err.value)


def test_library_block_is_required() -> None:
    with pytest.raises(ConfigError, match="'library'"):
        parse_vtl_config({"data_dir": "/x"})


def test_chap_password_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        parse_vtl_config({**MINIMAL, "iscsi": {"chap": {"userid": "u", "password": "hunter2"}}})
    assert "hunter2" not in str(err.value)


def test_load_reports_unreadable_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="readable file"):
        load_vtl_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("library: [\n")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_vtl_config(bad)

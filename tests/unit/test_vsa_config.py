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


# --- NVMe/TCP -------------------------------------------------------------------

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:8cc79367-1198-4576-b8e0-6862a4f558ef"
# printed by `nvme gen-dhchap-key` (nvme-cli 2.13) in the test VM
CLI_KEY = "DHHC-1:00:JVUvfkHalXYDfb55KP6AwwdzUPOgMtQiN9gjZsDRHKSy6qnS:"
CLI_KEY_SHA256 = "DHHC-1:01:k8zSIsHLMK5dEC5GpkWQl1sdT+IZJxzAVIpCv0X2GeRBn/Yj:"


def test_nvme_defaults_and_transport() -> None:
    cfg = parse_vsa_config(MINIMAL)
    assert cfg.transports == ("iscsi",) and not cfg.nvme_enabled
    cfg = parse_vsa_config({**MINIMAL, "transport": "nvmetcp"})
    assert cfg.nvme_enabled and not cfg.iscsi_enabled
    assert cfg.nvme.subsystem_nqn == "nqn.2026-11.io.thur:vsa"
    assert [str(p) for p in cfg.nvme.listen] == ["0.0.0.0:4420"]
    assert cfg.nvme.hosts == () and cfg.nvme.tls is False
    both = parse_vsa_config({**MINIMAL, "transport": ["iscsi", "nvmetcp"]})
    assert both.iscsi_enabled and both.nvme_enabled


def test_nvme_full_section() -> None:
    cfg = parse_vsa_config({**MINIMAL, "transport": ["nvmetcp"], "nvme": {
        "subsystem_nqn": "nqn.2026-11.com.example:disks",
        "listen": ["127.0.0.1", "[::1]:4430"],
        "hosts": [
            {"nqn": HOSTNQN, "dhchap_secret": CLI_KEY, "dhchap_ctrl_secret": CLI_KEY_SHA256,
             "dhchap_hash": "hmac(sha512)", "dhchap_dhgroup": "ffdhe3072"},
            {"nqn": "nqn.2026-11.com.example:host2", "dhchap_dhgroup": None},
        ],
        "tls": False,
    }})
    assert [str(p) for p in cfg.nvme.listen] == ["127.0.0.1:4420", "[::1]:4430"]
    one, two = cfg.nvme.hosts
    assert one.dhchap_key == CLI_KEY and one.dhchap_ctrl_key == CLI_KEY_SHA256
    assert (one.dhchap_hash, one.dhchap_dhgroup) == ("hmac(sha512)", "ffdhe3072")
    assert two.dhchap_key is None and two.dhchap_dhgroup == "null"
    assert CLI_KEY not in repr(cfg)  # secrets stay out of logs


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"transport": "fc"}, "transport"),
        ({"transport": []}, "transport"),
        ({"transport": ["iscsi", "iscsi"]}, "transport"),
        ({"nvme": {"subsystem_nqn": "iqn.2026-11.io.thur:x"}}, "nvme.subsystem_nqn"),
        ({"nvme": {"listen": ["localhost:4420"]}}, "nvme.listen[0]"),
        ({"nvme": {"listen": ["127.0.0.1:4420", "127.0.0.1"]}}, "nvme.listen"),
        ({"nvme": {"tls": "yes"}}, "nvme.tls"),
        ({"nvme": {"hosts": {"nqn": HOSTNQN}}}, "nvme.hosts"),
        ({"nvme": {"hosts": [{"nqn": "host1"}]}}, "nvme.hosts[0].nqn"),
        ({"nvme": {"hosts": [{"nqn": HOSTNQN, "secret": "x"}]}}, "nvme.hosts[0].secret"),
        ({"nvme": {"hosts": [{"nqn": HOSTNQN, "dhchap_secret": "hunter2"}]}},
         "nvme.hosts[0].dhchap_secret"),
        ({"nvme": {"hosts": [{"nqn": HOSTNQN, "dhchap_secret": CLI_KEY[:-3] + "X:"}]}},
         "nvme.hosts[0].dhchap_secret"),
        ({"nvme": {"hosts": [{"nqn": HOSTNQN, "dhchap_ctrl_secret": CLI_KEY}]}},
         "nvme.hosts[0].dhchap_ctrl_secret"),
        ({"nvme": {"hosts": [{"nqn": HOSTNQN, "dhchap_secret": CLI_KEY,
                              "dhchap_ctrl_secret": CLI_KEY}]}},
         "nvme.hosts[0].dhchap_ctrl_secret"),
        ({"nvme": {"hosts": [{"nqn": HOSTNQN, "dhchap_hash": "md5"}]}},
         "nvme.hosts[0].dhchap_hash"),
        ({"nvme": {"hosts": [{"nqn": HOSTNQN, "dhchap_dhgroup": "ffdhe1024"}]}},
         "nvme.hosts[0].dhchap_dhgroup"),
        ({"nvme": {"hosts": [{"nqn": HOSTNQN}, {"nqn": HOSTNQN}]}}, "nvme.hosts"),
        ({"nvme": {"port": 4420}}, "nvme.port"),
    ],
)
def test_bad_nvme_values_name_their_key(patch: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_vsa_config({**MINIMAL, **patch})
    assert err.value.key == key
    assert "DHHC-1:00:JVUv" not in str(err.value)  # a secret is never echoed

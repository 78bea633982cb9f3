"""The HTTP endpoint on a real socket (127.0.0.1, port 0), the `http` config key,
and sessions read from a configfs-shaped tree."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from configfs import iscsi_sessions, nvmet_controllers, parse_acl_info
from handlers.scsi import TapeDrive
from handlers.scsi import tape_drive_identity as drive_identity
from handlers.tcmu import FdDoorbell, TcmuDevice
from handlers.tcmu.fake_kernel import FakeKernel
from thur.cloud import LocalBackend, PackIndex, TierConfig, TieredPool
from thur.config import ConfigError, HttpConfig, Portal, parse_vtl_config
from thur.httpd import Endpoints, HttpService
from thur.observe import Observability
from thur.pool import LocalStore, PoolConfig
from thur.vsa.config import parse_vsa_config

IQN = "iqn.2026-11.io.thur:e2e"
ACL_INFO = """InitiatorName: iqn.1993-08.org.debian:01:abc
InitiatorAlias: backup1
LIO Session ID: 3   ISID: 0x00 02 3d 00 00 00  TSIH: 2  SessionType: Normal
Session State: TARG_SESS_STATE_LOGGED_IN
---------------------[iSCSI Session Values]-----------------------
  CmdSN/WR  :  CmdSN/WC  :  ExpCmdSN  :  MaxCmdSN  :     ITT    :     TTT
 0x00000047   0x00000047   0x00000047   0x000000c6   0x00000046   0xffffffff
----------------------[iSCSI Connections]-------------------------
CID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN
   Address 192.0.2.7 TCP  StatSN: 0x0000004b
"""


def fake_configfs(root: Path) -> None:
    tpg = root / "target" / "iscsi" / IQN / "tpgt_1"
    (tpg / "acls" / "iqn.1993-08.org.debian:01:abc").mkdir(parents=True)
    (tpg / "acls" / "iqn.1993-08.org.debian:01:abc" / "info").write_text(ACL_INFO)
    (tpg / "acls" / "iqn.1993-08.org.debian:01:idle").mkdir()
    (tpg / "acls" / "iqn.1993-08.org.debian:01:idle" / "info").write_text(
        "No active iSCSI Session for Initiator Endpoint: iqn.1993-08.org.debian:01:idle\n"
    )
    # Demo mode: names only, NUL after each newline as the kernel writes them.
    (tpg / "dynamic_sessions").write_text("iqn.2004-10.com.ubuntu:01:demo\n\0")


@pytest.fixture
def tier(tmp_path: Path) -> Iterator[TieredPool]:
    for d in ("pool", "bucket"):
        (tmp_path / d).mkdir()
    store = LocalStore(PoolConfig(tmp_path / "pool", budget_bytes=1 << 20, disk_free_floor=0,
                                  fsync=False))
    pool = TieredPool(store, LocalBackend(tmp_path / "bucket", fsync=False),
                      PackIndex(tmp_path / "pool" / "index.sqlite"), TierConfig(workers=1))
    yield pool
    pool.close()
    store.close()


def get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def test_four_endpoints_on_a_real_server(tmp_path: Path, tier: TieredPool) -> None:
    fake_configfs(tmp_path / "configfs")
    obs = Observability(
        "thurvtl", HttpConfig(Portal("127.0.0.1", 0)), tier=tier, target_iqn=IQN,
        info=lambda: {"num_drives": 1}, configfs_root=tmp_path / "configfs",
        gauges={"cartridges": ("Cartridges", lambda: 5)},
    )
    engine = TapeDrive(drive_identity("TD0001"))
    fake = FakeKernel()
    device = TcmuDevice(fake.map, FdDoorbell(fake.handler_fd), engine, name="fake",
                        on_command=obs.listener(engine), rescan=0.2)
    obs.add_lu("thurvtl_drive0", engine, device)
    device.start()
    obs.start()
    assert obs.http is not None
    port = obs.http.port
    try:
        fake.submit(bytes([0x12, 0, 0, 0, 36, 0]), data_in_len=36)
        fake.kick()
        assert fake.wait_notified(30)

        status, ctype, body = get(port, "/health")
        assert (status, ctype) == (200, "application/json")
        assert json.loads(body) == {"status": "ok", "product": "thurvtl", "lus": 1,
                                    "failed": {}}

        status, ctype, body = get(port, "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        text = body.decode()
        assert 'thurvtl_scsi_command_seconds_count{device="tape",opcode="INQUIRY",' \
               'outcome="GOOD"} 1.0' in text
        assert "thurvtl_iscsi_sessions 2.0" in text
        assert "thurvtl_cartridges 5.0" in text
        assert 'thurvtl_lu_serving{device="tape",lu="thurvtl_drive0"} 1.0' in text

        status, _, body = get(port, "/sessions")
        sessions = json.loads(body)
        assert status == 200 and sessions["target_iqn"] == IQN and sessions["nvme"] is None
        by_name = {s["initiator"]: s for s in sessions["iscsi"]}
        assert set(by_name) == {"iqn.1993-08.org.debian:01:abc", "iqn.2004-10.com.ubuntu:01:demo"}
        assert by_name["iqn.1993-08.org.debian:01:abc"]["addresses"] == ["192.0.2.7"]

        status, _, body = get(port, "/info")
        assert status == 200 and json.loads(body) == {"product": "thurvtl", "num_drives": 1}

        assert get(port, "/nope")[0] == 404
        # OpenMetrics when a scraper asks for it.
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            assert r.read().rstrip().endswith(b"# EOF")
    finally:
        obs.close()
        device.close()
        fake.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_health_fails_when_a_serve_loop_died(tmp_path: Path, tier: TieredPool) -> None:
    class Dead:
        ring: Any = None
        error: BaseException | None = OSError("uio device closed")
        running = False
        closed = False

    obs = Observability("thurvsa", None, tier=tier, target_iqn=IQN, info=dict,
                        configfs_root=tmp_path)
    obs.add_lu("thurvsa_vol1_1", object(), Dead())
    status, body = obs.health()
    assert status == 503 and body["failed"] == {"thurvsa_vol1_1": "uio device closed"}


def test_route_errors_become_500_and_the_server_survives(tier: TieredPool) -> None:
    def broken() -> tuple[int, Any]:
        raise RuntimeError("boom")

    obs = Observability("thurvtl", None, tier=tier, target_iqn=IQN, info=dict)
    service = HttpService(HttpConfig(Portal("127.0.0.1", 0)),
                          Endpoints(obs.metrics.registry, broken, broken, broken))
    service.start()
    try:
        status, _, body = get(service.port, "/info")
        assert status == 500 and json.loads(body) == {"error": "boom"}
        assert get(service.port, "/metrics")[0] == 200
    finally:
        service.close()


def test_a_taken_port_is_a_config_error_naming_the_key(tier: TieredPool) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        obs = Observability("thurvtl", HttpConfig(Portal("127.0.0.1", port)), tier=tier,
                            target_iqn=IQN, info=dict)
        with pytest.raises(ConfigError) as exc:
            obs.start()
        assert exc.value.key == "http.listen"
    finally:
        holder.close()


# --- config ---------------------------------------------------------------------------

VTL = {"data_dir": "/var/lib/thurvtl", "library": {"num_slots": 4, "num_drives": 1}}
VSA = {"data_dir": "/var/lib/thurvsa"}


def test_defaults_differ_so_both_products_share_a_host() -> None:
    vtl, vsa = parse_vtl_config(VTL).http, parse_vsa_config(VSA).http
    assert vtl is not None and vsa is not None
    assert str(vtl.listen) == "0.0.0.0:9090" and str(vsa.listen) == "0.0.0.0:9091"


@pytest.mark.parametrize("value", [None, {"enabled": False}])
def test_http_can_be_turned_off(value: object) -> None:
    assert parse_vtl_config({**VTL, "http": value}).http is None
    assert parse_vsa_config({**VSA, "http": value}).http is None


def test_listen_address() -> None:
    http = parse_vsa_config({**VSA, "http": {"listen": "[::1]:9191"}}).http
    assert http is not None and (http.listen.ip, http.listen.port) == ("::1", 9191)
    assert parse_vtl_config({**VTL, "http": {}}).http == parse_vtl_config(VTL).http


@pytest.mark.parametrize(
    ("http", "key"),
    [
        ({"listen": 9090}, "http.listen"),
        ({"listen": "9090"}, "http.listen"),
        ({"listen": "localhost:9090"}, "http.listen"),
        ({"listen": "0.0.0.0:70000"}, "http.listen"),
        ({"listen": "0.0.0.0:0"}, "http.listen"),
        ({"enabled": "yes"}, "http.enabled"),
        ({"port": 9090}, "http.port"),
        ("0.0.0.0:9090", "http"),
    ],
)
def test_bad_values_name_the_key(http: object, key: str) -> None:
    for parse, base in ((parse_vtl_config, VTL), (parse_vsa_config, VSA)):
        with pytest.raises(ConfigError) as exc:
            parse({**base, "http": http})
        assert exc.value.key == key
        assert f"'{key}'" in str(exc.value)


# --- sessions -------------------------------------------------------------------------


def test_acl_info_parsed() -> None:
    s = parse_acl_info(ACL_INFO, "fallback", 1)
    assert s is not None
    assert (s.initiator, s.alias, s.session_id, s.tsih, s.session_type, s.state) == (
        "iqn.1993-08.org.debian:01:abc", "backup1", 3, 2, "Normal",
        "TARG_SESS_STATE_LOGGED_IN",
    )
    assert s.addresses == ("192.0.2.7",) and s.acl and s.isid == "0x00023d000000"
    assert parse_acl_info("No active iSCSI Session for Initiator Endpoint: x\n", "x", 1) is None


def test_sessions_of_a_missing_target_are_none(tmp_path: Path) -> None:
    fake_configfs(tmp_path)
    assert iscsi_sessions("iqn.2026-11.io.thur:other", tmp_path) == []
    found = iscsi_sessions(IQN, tmp_path)
    assert [(s.initiator, s.acl) for s in found] == [
        ("iqn.2004-10.com.ubuntu:01:demo", False), ("iqn.1993-08.org.debian:01:abc", True)
    ]


def test_nvmet_controllers_from_debugfs(tmp_path: Path) -> None:
    assert nvmet_controllers("nqn.x", tmp_path / "absent") is None
    ctrl = tmp_path / "nqn.2026-11.io.thur:vsa" / "ctrl1"
    ctrl.mkdir(parents=True)
    (ctrl / "hostnqn").write_text("nqn.2014-08.org.nvmexpress:uuid:1\n")
    (ctrl / "host_traddr").write_text("192.0.2.9\n")
    (ctrl / "queues").mkdir()
    assert nvmet_controllers("nqn.2026-11.io.thur:vsa", tmp_path) == [
        {"controller": "ctrl1", "host_traddr": "192.0.2.9",
         "hostnqn": "nqn.2014-08.org.nvmexpress:uuid:1"}
    ]
    assert nvmet_controllers("nqn.2026-11.io.thur:none", tmp_path) == []

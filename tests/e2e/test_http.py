"""The HTTP endpoints of running daemons, through the real kernel target.

thurvtld (default port 9090) serves a library an initiator is logged in to with an
ACL, so /sessions parses the kernel's own ACL `info` and /metrics has the SCSI
commands the login and udev sent. thurvsad then serves one volume on its default
port 9091.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import kit
from tests.e2e.kit import VsaDaemon

IQN = "iqn.2026-11.io.thur:e2e"
VSA_IQN = "iqn.2026-11.io.thur:vsahttp"


def curl(url: str) -> tuple[int, str]:
    out = kit.sh(f"curl -sS --max-time 30 -w '\\n%{{http_code}}' {url}").stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


def curl_json(url: str) -> Any:
    code, body = curl(url)
    assert code == 200, body
    return json.loads(body)


def initiator_name() -> str:
    text = Path("/etc/iscsi/initiatorname.iscsi").read_text()
    match = re.search(r"^InitiatorName=(\S+)", text, re.MULTILINE)
    assert match, text
    return match.group(1)


def test_vtl_then_vsa_endpoints(vtl: Callable[..., kit.Daemon]) -> None:
    me = initiator_name()
    daemon = vtl(iscsi={"initiators": [me]}).start()
    base = "http://127.0.0.1:9090"
    health = curl_json(f"{base}/health")
    assert health["status"] == "ok" and health["lus"] == 3  # changer + 2 drives

    kit.discover()
    kit.login(IQN)
    kit.wait_for("1 changer and 2 drives", lambda: len(kit.our_devices()) == 3,
                 kit.DEVICE_TIMEOUT)
    kit.settle()

    sessions = curl_json(f"{base}/sessions")
    kit.sh(f"cat /sys/kernel/config/target/iscsi/{IQN}/tpgt_1/acls/{me}/info")
    assert [(s["initiator"], s["acl"], s["session_type"]) for s in sessions["iscsi"]] == [
        (me, True, "Normal")
    ]
    assert sessions["iscsi"][0]["addresses"] == ["127.0.0.1"]
    assert sessions["iscsi"][0]["state"] == "TARG_SESS_STATE_LOGGED_IN"

    info = curl_json(f"{base}/info")
    assert info["product"] == "thurvtl" and info["num_drives"] == 2
    assert len(info["drives"]) == 2

    code, text = curl(f"{base}/metrics")
    assert code == 200
    assert "thurvtl_iscsi_sessions 1.0" in text
    assert re.search(r'thurvtl_scsi_command_seconds_count\{device="tape",opcode="INQUIRY",'
                     r'outcome="GOOD"\} [1-9]', text), text
    assert re.search(r'thurvtl_scsi_command_seconds_count\{device="changer",opcode="INQUIRY",'
                     r'outcome="GOOD"\} [1-9]', text), text
    assert 'thurvtl_lu_serving{device="changer",lu=' in text
    assert "thurvtl_pool_capacity_bytes" in text
    assert curl(f"{base}/nope")[0] == 404

    kit.logout_all()
    assert daemon.signal(signal.SIGTERM) == 0
    # The port is free once thurvtld has stopped.
    assert kit.sh(f"curl -sS --max-time 10 {base}/health", check=False).returncode != 0

    # thurvsad on its default port. Not beside thurvtld: LIO has one db_root per host
    # and each daemon sets its own (data_dir/lio), so the second one's apply is refused.
    data_dir = Path(tempfile.mkdtemp(prefix="thurvsa-http-", dir="/var/tmp"))
    config_path = data_dir.parent / f"{data_dir.name}.yaml"
    config = {
        "data_dir": str(data_dir),
        "admin_socket": str(data_dir / "admin.sock"),
        "iscsi": {"listen": ["127.0.0.1:3260"], "target_iqn": VSA_IQN},
    }
    config_path.write_text(yaml.safe_dump(config))
    vsa = VsaDaemon(config_path, config, data_dir.parent / f"{data_dir.name}.log")
    try:
        vsa.start()
        vsa_base = "http://127.0.0.1:9091"
        vsa.cli("volume create vol1 --size 1G")
        health = curl_json(f"{vsa_base}/health")
        assert health["status"] == "ok" and health["lus"] == 1
        info = curl_json(f"{vsa_base}/info")
        assert info["product"] == "thurvsa"
        assert [(v["name"], v["serving"]) for v in info["volumes"]] == [("vol1", True)]
        assert curl_json(f"{vsa_base}/sessions")["iscsi"] == []
        code, text = curl(f"{vsa_base}/metrics")
        assert code == 200
        assert "thurvsa_volumes 1.0" in text and "thurvsa_iscsi_sessions 0.0" in text
        assert 'thurvsa_lu_serving{device="disk",lu=' in text
        assert vsa.signal(signal.SIGTERM) == 0
    finally:
        if vsa.proc is not None and vsa.proc.poll() is None:
            vsa.signal(signal.SIGTERM)
        subprocess.run([sys.executable, "-m", "thur.vsa.daemon", "--config", str(config_path),
                        "--teardown"], check=False, timeout=120)
        if vsa.log_path.exists():
            print(f"--- {vsa.log_path.name} ---\n{vsa.log()}")
        shutil.rmtree(data_dir, ignore_errors=True)

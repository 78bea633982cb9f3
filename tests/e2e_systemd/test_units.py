"""thurvtld.service and thurvsad.service for real: the VM boots with systemd as PID 1
(`make e2e-systemd`), packaging/install.sh installs Thur as documented, and both
daemons run side by side, driven only through systemctl, the CLIs, curl and open-iscsi.

The VM has no network, so /opt/thur (where the units look) is the guest's venv, which
already holds the dependencies, and install.sh pip-installs Thur into it offline. The
units, sysusers.d, tmpfiles.d and default configs are installed byte for byte. The
tests run in file order on one installation.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import kit

SRC = Path("/mnt/src")
# pip builds in the source tree; a copy keeps build/ and *.egg-info out of the checkout.
STAGE = Path("/var/tmp/thur-src")
PREFIX = Path("/opt/thur")
UNITS = ("thurvtld.service", "thurvsad.service")
VTL_IQN = "iqn.2026-11.io.thur:vtl"
VSA_IQN = "iqn.2026-11.io.thur:vsa"
OPERATOR = "thurop"  # a login in group thurvtl only
# CAP_CHOWN (0), CAP_NET_BIND_SERVICE (10), CAP_SYS_MODULE (16): the units' bounding set.
CAP_BOUNDING = (1 << 0) | (1 << 10) | (1 << 16)


def systemctl(args: str, check: bool = True) -> str:
    return kit.sh(f"systemctl --no-pager {args}", check=check, timeout=600).stdout.strip()


def prop(unit: str, name: str) -> str:
    return systemctl(f"show -P {name} {unit}")


def as_operator(cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`cmd` as OPERATOR with the installed package only (not /mnt/src's)."""
    return kit.sh(f"cd /tmp && runuser -u {OPERATOR} -- env -u PYTHONPATH {cmd}", check=check)


def cli(product: str, args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return kit.sh(f"cd /tmp && env -u PYTHONPATH {PREFIX}/bin/{product} {args}", check=check)


def curl(port: int, path: str) -> str:
    return kit.sh(f"curl -sS --fail --max-time 60 http://127.0.0.1:{port}{path}").stdout


def journal(unit: str) -> str:
    return kit.sh(f"journalctl --no-pager -o cat -u {unit}", check=False).stdout


def ours_in_kernel() -> list[str]:
    return kit.kernel_objects(VTL_IQN, "thurvtl") + kit.kernel_objects(VSA_IQN, "thurvsa")


@pytest.fixture(scope="module", autouse=True)
def installed() -> Iterator[None]:
    PREFIX.symlink_to("/opt/thur-venv")
    STAGE.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(SRC / name, STAGE / name)
    for name in ("thur", "handlers", "configfs", "packaging", "docs"):
        shutil.copytree(SRC / name, STAGE / name, ignore=shutil.ignore_patterns("__pycache__"))
    kit.sh(f"THUR_PIP_ARGS='--no-index --no-build-isolation' {STAGE}/packaging/install.sh",
           timeout=900)
    kit.sh("modprobe iscsi_tcp")
    yield
    kit.logout_all()
    for unit in UNITS:
        systemctl(f"stop {unit}", check=False)
        print(f"--- journal of {unit} ---\n{journal(unit)[-20000:]}")
    # Whatever a failed test left in the kernel goes, so the VM powers off cleanly.
    if ours_in_kernel():
        for daemon, product in (("thurvtld", "thurvtl"), ("thurvsad", "thurvsa")):
            kit.sh(f"{PREFIX}/bin/{daemon} --config /etc/{product}/{product}.yaml --teardown",
                   check=False)


def test_installed_files_and_verify() -> None:
    out = kit.sh("systemd-analyze verify " + " ".join(UNITS))
    assert (out.stdout + out.stderr).strip() == "", "systemd-analyze verify is not clean"
    kit.sh("systemd-analyze security --no-pager " + " ".join(UNITS))
    for product in ("thurvtl", "thurvsa"):
        kit.sh(f"getent passwd {product}")
        gid = grp.getgrnam(product).gr_gid
        config = Path(f"/etc/{product}/{product}.yaml")
        st = config.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, 0o640)
    assert Path("/var/lib/thur/lio").is_dir()
    # Installing again upgrades Thur and keeps an existing config as it is.
    config = Path("/etc/thurvsa/thurvsa.yaml")
    edited = config.read_text() + "# edited by the admin\n"
    config.write_text(edited)
    kit.sh(f"THUR_PIP_ARGS='--no-index --no-build-isolation' {STAGE}/packaging/install.sh",
           timeout=900)
    assert config.read_text() == edited


def test_both_daemons_side_by_side() -> None:
    systemctl("enable --now " + " ".join(UNITS))  # returns once both sent READY=1
    for unit, product, iqn in (("thurvtld.service", "thurvtl", VTL_IQN),
                               ("thurvsad.service", "thurvsa", VSA_IQN)):
        assert systemctl(f"is-enabled {unit}") == "enabled"
        assert systemctl(f"is-active {unit}") == "active"
        # thurvsad names the transport too ("serving iSCSI <iqn> on ...").
        assert f"{iqn} on 0.0.0.0:3260" in systemctl(f"status {unit}")
        gid = grp.getgrnam(product).gr_gid
        status = Path(f"/proc/{prop(unit, 'MainPID')}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines())
        assert fields["Uid"].split()[0] == "0" and fields["Gid"].split()[0] == str(gid)
        assert int(fields["CapBnd"], 16) == CAP_BOUNDING
        assert fields["NoNewPrivs"].strip() == "1"
        for path, mode in ((f"/run/{product}", 0o750), (f"/run/{product}/admin.sock", 0o660),
                           (f"/var/lib/{product}", 0o750)):
            st = os.stat(path)
            assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (gid, mode), path
        # Disjoint: each daemon's view of the other's data directory is empty.
        other = "thurvsa" if product == "thurvtl" else "thurvtl"
        assert os.listdir(f"/var/lib/{other}")
        assert os.listdir(f"/proc/{prop(unit, 'MainPID')}/root/var/lib/{other}") == []

    # The group grants the CLI: OPERATOR is in thurvtl, not in thurvsa.
    kit.sh(f"useradd --system --no-create-home --groups thurvtl {OPERATOR}")
    vtl = f"{PREFIX}/bin/thurvtl"
    as_operator(f"{vtl} ping")
    denied = as_operator(f"{PREFIX}/bin/thurvsa ping", check=False)
    assert denied.returncode == 1 and "permission denied" in denied.stderr

    as_operator(f"{vtl} cartridge create ABC001L8 --slot 1")
    as_operator(f"{vtl} cartridge create WRM001L8 --worm")
    as_operator(f"{vtl} changer load 1 0")
    assert "ABC001L8" in as_operator(f"{vtl} changer inventory").stdout
    as_operator(f"{vtl} changer unload 0")
    cartridges = json.loads(as_operator(f"{vtl} cartridge list --json").stdout)
    assert len(cartridges) == 2, cartridges
    assert json.loads(as_operator(f"{vtl} library info --json").stdout)["target_iqn"] == VTL_IQN

    cli("thurvsa", "volume create vol1 --size 1G")
    cli("thurvsa", "volume create scratch --size 64M")
    cli("thurvsa", "volume resize vol1 --size 2G")
    cli("thurvsa", "volume delete scratch")
    cli("thurvsa", "volume list")
    assert json.loads(cli("thurvsa", "volume info vol1 --json").stdout)

    # HTTP on both ports.
    for port, product in ((9090, "thurvtl"), (9091, "thurvsa")):
        assert json.loads(curl(port, "/health"))["status"] == "ok"
        assert f"{product}_pool_used_bytes" in curl(port, "/metrics")
        json.loads(curl(port, "/sessions"))
    assert "thurvtl_cartridges 2.0" in curl(9090, "/metrics")
    assert "thurvsa_volumes 1.0" in curl(9091, "/metrics")
    assert json.loads(curl(9090, "/info"))["target_iqn"] == VTL_IQN
    info = json.loads(curl(9091, "/info"))
    assert [v["name"] for v in info["volumes"]] == ["vol1"] and info["volumes"][0]["serving"]

    # One portal, two targets: an initiator sees the changer, the drives and the disk.
    found = kit.discover().stdout
    assert VTL_IQN in found and VSA_IQN in found
    kit.login(VTL_IQN)
    kit.login(VSA_IQN)
    kinds = sorted(d.kind for d in kit.our_devices())
    assert kinds == ["disk", "mediumx", "tape", "tape"], kit.lsscsi()
    initiator = Path("/etc/iscsi/initiatorname.iscsi").read_text().split("=", 1)[1].strip()
    assert initiator in curl(9090, "/sessions") and initiator in curl(9091, "/sessions")
    kit.logout_all()

    # The audit logs hold every change, with who made it.
    for product in ("thurvtl", "thurvsa"):
        assert "chain intact" in cli(product, "system audit verify").stdout
    tail = json.loads(as_operator(f"{vtl} system audit tail --json").stdout)
    assert {e["verb"] for e in tail} >= {"cartridge.create", "changer.load", "changer.unload"}
    assert all(e["who"]["user"] == OPERATOR for e in tail if e["verb"].startswith("c")), tail

    systemctl("stop " + " ".join(UNITS))
    for unit in UNITS:
        assert systemctl(f"is-active {unit}", check=False) == "inactive"
        assert prop(unit, "Result") == "success"
    assert ours_in_kernel() == []
    # Daemons down: the group reads the config and the log itself.
    assert "chain intact" in as_operator(f"{vtl} system audit verify").stdout


def test_restart_policy_and_detach() -> None:
    systemctl("start " + " ".join(UNITS))

    # A crash: systemd restarts thurvtld, which reattaches to its kernel objects.
    unit = "thurvtld.service"
    cli("thurvtl", "cartridge create RST001L8")
    pid = prop(unit, "MainPID")
    kit.sh(f"kill -9 {pid}")
    kit.wait_for("thurvtld to be restarted",
                 lambda: prop(unit, "ActiveState") == "active" and prop(unit, "MainPID") != pid,
                 kit.START_TIMEOUT)
    assert prop(unit, "NRestarts") == "1"
    assert "reattaching" in journal(unit)
    listed = json.loads(cli("thurvtl", "cartridge list --json").stdout)
    assert "RST001L8" in {c["barcode"] for c in listed}, listed

    # Upgrade path: SIGUSR1 detaches and exits 0 (no restart); the target stays up and
    # the next start reattaches.
    unit = "thurvsad.service"
    cli("thurvsa", "volume create detached --size 64M")
    systemctl(f"kill -s USR1 --kill-whom=main {unit}")
    kit.wait_for("thurvsad to detach", lambda: prop(unit, "ActiveState") == "inactive",
                 kit.START_TIMEOUT)
    assert prop(unit, "Result") == "success"
    assert kit.kernel_objects(VSA_IQN, "thurvsa")
    systemctl(f"start {unit}")
    assert journal(unit).count("reattaching") == 1
    volumes = {v["name"]: v for v in json.loads(curl(9091, "/info"))["volumes"]}
    assert volumes["detached"]["serving"], volumes

    # A bad config: exit status 2 and no restart (RestartPreventExitStatus).
    systemctl(f"stop {unit}")
    config = Path("/etc/thurvsa/thurvsa.yaml")
    good = config.read_text()
    config.write_text(good + "no_such_key: 1\n")
    try:
        systemctl(f"start {unit}", check=False)
        assert (prop(unit, "ActiveState"), prop(unit, "SubState")) == ("failed", "failed")
        assert prop(unit, "ExecMainStatus") == "2"
        assert "no_such_key" in journal(unit)
    finally:
        config.write_text(good)
        systemctl(f"reset-failed {unit}")

    systemctl("stop " + " ".join(UNITS))
    assert ours_in_kernel() == []

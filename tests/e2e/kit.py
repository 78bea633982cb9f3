"""Helpers for e2e tests that run as root inside the test VM.

They drive the real kernel target and real initiators (open-iscsi, st/ch,
mt-st, mtx, sg3-utils), so every wait is bounded and every failure prints what
the daemon logged.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

CONFIGFS_TARGET = Path("/sys/kernel/config/target")
# TCG is ~10x slower than a real machine; these are ceilings, not expectations.
START_TIMEOUT = 180.0
DEVICE_TIMEOUT = 120.0


def sh(cmd: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a shell command, echoing it and its output into the test log."""
    print(f"$ {cmd}", flush=True)
    proc = subprocess.run(
        cmd, shell=True, capture_output=True, text=True, timeout=timeout, check=False
    )
    out = (proc.stdout + proc.stderr).rstrip()
    if out:
        print(out, flush=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"`{cmd}` exited {proc.returncode}:\n{out}")
    return proc


def wait_for(what: str, predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


@dataclass
class Daemon:
    """One thurvtld process started by a test (VsaDaemon: thurvsad)."""

    product: ClassVar[str] = "vtl"  # thur.<product>.daemon and thur.<product>.cli

    config_path: Path
    config: dict[str, Any]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return Path(self.config["admin_socket"])

    def start(self) -> Daemon:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"thur.{self.product}.daemon", "--config",
             str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(f"thur{self.product}d to serve", self._ready, START_TIMEOUT)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"thurvtld exited {self.proc.returncode}:\n{self.log()}")
        return self.cli("ping", check=False).returncode == 0

    def cli(self, args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(f"{sys.executable} -m thur.{self.product}.cli --socket {self.socket} {args}",
                  check=check)

    def signal(self, sig: int, timeout: float = 120) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"thurvtld ignored signal {sig}:\n{self.log()}") from None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]


def write_config(path: Path, data_dir: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "data_dir": str(data_dir),
        "admin_socket": str(data_dir / "admin.sock"),
        "library": {"num_slots": 8, "num_mail_slots": 2, "num_drives": 2},
        "iscsi": {"listen": ["127.0.0.1:3260"], "target_iqn": "iqn.2026-11.io.thur:e2e"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    return config


# --- open-iscsi ------------------------------------------------------------


def start_iscsid() -> None:
    sh("modprobe iscsi_tcp")
    Path("/run/lock/iscsi").mkdir(parents=True, exist_ok=True)
    if sh("pgrep -x iscsid", check=False).returncode != 0:
        sh("iscsid")
        time.sleep(1)


def discover(
    portal: str = "127.0.0.1:3260", check: bool = True
) -> subprocess.CompletedProcess[str]:
    return sh(f"iscsiadm -m discovery -t sendtargets -p {portal}", check=check)


def set_chap(
    iqn: str, portal: str, userid: str, password: str, mutual: tuple[str, str] | None = None
) -> None:
    node = f"iscsiadm -m node -T {iqn} -p {portal} -o update"
    sh(f"{node} -n node.session.auth.authmethod -v CHAP")
    sh(f"{node} -n node.session.auth.username -v {userid}")
    sh(f"{node} -n node.session.auth.password -v {password}")
    if mutual:
        sh(f"{node} -n node.session.auth.username_in -v {mutual[0]}")
        sh(f"{node} -n node.session.auth.password_in -v {mutual[1]}")


def login(
    iqn: str, portal: str = "127.0.0.1:3260", check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = sh(f"iscsiadm -m node -T {iqn} -p {portal} --login", check=check, timeout=120)
    settle()
    return result


def settle() -> None:
    """Wait for udev: its persistent-storage rules open each new st/sg node (scsi_id),
    and st refuses a second opener with EBUSY while they do."""
    sh("udevadm settle --timeout=120", check=False, timeout=150)


def logout_all() -> None:
    sh("iscsiadm -m node --logoutall=all", check=False, timeout=120)
    sh("iscsiadm -m node -o delete", check=False)
    sh("iscsiadm -m discoverydb -t sendtargets -p 127.0.0.1:3260 -o delete", check=False)


def session_ids() -> list[str]:
    out = sh("iscsiadm -m session", check=False).stdout
    return re.findall(r"\[(\d+)\]", out)


@dataclass(frozen=True)
class ScsiDev:
    hctl: str
    kind: str
    vendor: str
    model: str
    node: str
    sg: str


def lsscsi() -> list[ScsiDev]:
    devices = []
    for line in sh("lsscsi -g", check=False).stdout.splitlines():
        m = re.match(r"\[(\S+)\]\s+(\S+)\s+(\S+)\s+(.+?)\s+\S+\s+(\S+)\s+(\S+)\s*$", line)
        if m:
            devices.append(ScsiDev(*m.groups()))
    return devices


def our_devices(vendor: str = "THUR") -> list[ScsiDev]:
    return [d for d in lsscsi() if d.vendor == vendor]


def kernel_objects(iqn: str, instance: str) -> list[str]:
    """Our objects still in configfs: the target and our user backstores."""
    found = []
    if (CONFIGFS_TARGET / "iscsi" / iqn).exists():
        found.append(f"iscsi/{iqn}")
    core = CONFIGFS_TARGET / "core"
    if core.exists():
        for hba in core.glob("user_*"):
            found += [
                f"core/{hba.name}/{d.name}" for d in hba.iterdir() if d.name.startswith(instance)
            ]
    return found


def stop_and_teardown(daemon: Daemon) -> None:
    """What the `vtl` fixture does after a test, for fixtures that own a daemon themselves:
    log out, stop the daemon, remove whatever it left in the kernel, print its log."""
    logout_all()
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.signal(signal.SIGTERM)
    subprocess.run(
        [sys.executable, "-m", "thur.vtl.daemon", "--config", str(daemon.config_path),
         "--teardown"],
        check=False,
        timeout=120,
    )
    print(f"--- {daemon.log_path.name} ---\n{daemon.log()}")


class VsaDaemon(Daemon):
    """Daemon for thurvsad (same lifecycle, its own module and CLI)."""

    product: ClassVar[str] = "vsa"

    def teardown(self) -> subprocess.CompletedProcess[str]:
        """`thurvsad --teardown` on this daemon's config."""
        return sh(f"{sys.executable} -m thur.vsa.daemon --config {self.config_path} --teardown",
                  check=False, timeout=300)

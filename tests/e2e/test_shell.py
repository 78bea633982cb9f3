"""`thurvtl shell` and `thurvsa shell` in tmux against the real daemons in the VM.

An operator's session: tmux runs the shell in a terminal, keys are typed with
send-keys (TAB included) and the screen is read with capture-pane. The shells
create a cartridge and a volume; the CLIs then see them.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e import kit
from tests.e2e.kit import VsaDaemon

SCREEN_TIMEOUT = 120.0  # TCG: a ceiling, not an expectation


class Tmux:
    def __init__(self, name: str, command: str, state: Path) -> None:
        self.name = name
        kit.sh(f"tmux kill-session -t {name}", check=False)
        kit.sh(f"tmux new-session -d -s {name} -x 160 -y 50 "
               f"'env XDG_STATE_HOME={state} TERM=xterm {command}; sleep 600'")

    def keys(self, *keys: str) -> None:
        kit.sh(f"tmux send-keys -t {self.name} " + " ".join(f"'{k}'" for k in keys))

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name],
                              capture_output=True, text=True, check=True).stdout

    def wait(self, text: str) -> str:
        """Wait until the screen shows `text` (capture-pane drops trailing spaces, so a
        prompt is waited for without its own)."""
        def shown() -> str | None:
            screen = self.screen()
            return screen if text in screen else None

        try:
            return str(kit.wait_for(f"{text!r} on the screen", shown, SCREEN_TIMEOUT))
        except AssertionError:
            print(self.screen())
            raise

    def close(self) -> None:
        kit.sh(f"tmux kill-session -t {self.name}", check=False)


def test_thurvtl_shell_creates_a_cartridge(vtl: Callable[..., kit.Daemon],
                                           tmp_path: Path) -> None:
    daemon = vtl().start()
    term = Tmux("thurvtl", f"{sys.executable} -m thur.vtl.cli --socket {daemon.socket} shell",
                tmp_path / "state")
    try:
        term.wait("thurvtl />")
        term.keys("cd /cart", "Tab")
        term.wait("thurvtl /> cd /cartridges")
        term.keys("Enter")
        term.wait("thurvtl /cartridges>")
        term.keys("create E2E001L8 slot=3", "Enter")
        term.wait("created E2E001L8 in slot 3")
        term.keys("ls /slots", "Enter")
        screen = term.wait("[E2E001L8]")
        assert [line for line in screen.splitlines() if "o- 3 " in line][0].endswith(
            "[E2E001L8]")
        term.keys("exit", "Enter")
    finally:
        term.close()
    assert "E2E001L8  slot 3" in daemon.cli("cartridge list").stdout
    assert "cartridge.create" in daemon.cli("system audit tail -n 1").stdout


@pytest.fixture
def vsa() -> Iterator[VsaDaemon]:
    kit.start_iscsid()
    kit.logout_all()
    data_dir = Path(tempfile.mkdtemp(prefix="thurvsa-shell-", dir="/var/tmp"))
    config_path = data_dir.parent / f"{data_dir.name}.yaml"
    config = {"data_dir": str(data_dir), "admin_socket": str(data_dir / "admin.sock"),
              "iscsi": {"listen": ["127.0.0.1:3260"],
                        "target_iqn": "iqn.2026-11.io.thur:shelle2e"},
              "instance": "thurvsa"}
    config_path.write_text(yaml.safe_dump(config))
    daemon = VsaDaemon(config_path, config, data_dir.parent / f"{data_dir.name}.log")
    try:
        yield daemon.start()
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.signal(signal.SIGTERM)
        subprocess.run([sys.executable, "-m", "thur.vsa.daemon", "--config", str(config_path),
                        "--teardown"], check=False, timeout=120)
        if daemon.log_path.exists():
            print(f"--- {daemon.log_path.name} ---\n{daemon.log()}")
        shutil.rmtree(data_dir, ignore_errors=True)


def test_thurvsa_shell_creates_a_volume(vsa: VsaDaemon, tmp_path: Path) -> None:
    term = Tmux("thurvsa", f"{sys.executable} -m thur.vsa.cli --socket {vsa.socket} shell",
                tmp_path / "state")
    try:
        term.wait("thurvsa />")
        term.keys("cd /vol", "Tab", "Enter")
        term.wait("thurvsa /volumes>")
        term.keys("create vol1 size=1G", "Enter")
        term.wait("created vol1: 1.00 GiB, LUN 0")
        term.keys("cd vol1", "Enter")
        term.wait("thurvsa /volumes/vol1>")
        term.keys("set attribute size=2G", "Enter")
        term.wait("Parameter size is now '2.00 GiB (2147483648 bytes)'.")
        term.keys("exit", "Enter")
    finally:
        term.close()
    listing = vsa.cli("volume list").stdout.splitlines()
    assert listing[1].split() == ["vol1", "0", "2.00", "GiB", "0", "B", "yes"]

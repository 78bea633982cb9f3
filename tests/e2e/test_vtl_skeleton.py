"""The walking skeleton through the real kernel: LIO + TCMU + open-iscsi + st/ch.

Each test starts thurvtld, logs in over iSCSI on 127.0.0.1 and checks what a
backup admin's tools see.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable

from tests.e2e import kit

IQN = "iqn.2026-11.io.thur:e2e"


def _attached(num_drives: int) -> list[kit.ScsiDev]:
    def ready() -> list[kit.ScsiDev] | None:
        devs = kit.our_devices()
        kinds = sorted(d.kind for d in devs)
        if kinds == ["mediumx"] + ["tape"] * num_drives and all(d.node != "-" for d in devs):
            return devs
        return None

    devs = kit.wait_for(f"1 changer and {num_drives} drives", ready, kit.DEVICE_TIMEOUT)
    kit.settle()  # the st/ch nodes appear asynchronously; let udev finish with them
    return devs


def _changer_sg(devs: list[kit.ScsiDev]) -> str:
    return next(d.sg for d in devs if d.kind == "mediumx")


def _tape_nodes(devs: list[kit.ScsiDev]) -> list[str]:
    return sorted(d.node.replace("/dev/st", "/dev/nst") for d in devs if d.kind == "tape")


def test_library_attaches_and_tools_work(vtl: Callable[..., kit.Daemon]) -> None:
    daemon = vtl(library={"num_slots": 8, "num_mail_slots": 2, "num_drives": 2}).start()
    daemon.cli("library info")
    # The admin socket records state changes, with who from the kernel (SO_PEERCRED).
    daemon.cli("cartridge create ABC001L8")
    entry = json.loads(daemon.cli("system audit tail -n 1 --json").stdout)[0]
    assert (entry["verb"], entry["args"]["barcode"], entry["result"]) == (
        "cartridge.create", "ABC001L8", {"ok": True})
    assert entry["who"]["uid"] == os.getuid()
    assert oct(daemon.socket.stat().st_mode & 0o777) == "0o660"
    kit.discover()
    kit.login(IQN)
    devs = _attached(2)
    kit.sh("lsscsi -g")
    assert {d.model for d in devs if d.kind == "tape"} == {"Ultrium 8-SCSI"}
    assert {d.model for d in devs if d.kind == "mediumx"} == {"VTL"}
    kit.sh(f"mtx -f {_changer_sg(devs)} status")
    for node in _tape_nodes(devs):
        kit.sh(f"mt-st -f {node} status")
    kit.logout_all()
    assert daemon.signal(signal.SIGTERM) == 0
    assert kit.kernel_objects(IQN, "thurvtl") == []
    # With the daemon down, verify reads <data_dir>/audit through the config.
    assert "audit log valid: 1 entries" in daemon.cli(
        f"system audit verify --config {daemon.config_path}").stdout


def test_chap_wrong_secret_refused_right_secret_accepted(vtl: Callable[..., kit.Daemon]) -> None:
    chap = {"userid": "backupadmin", "password": "s3cret-pass-16ch"}
    vtl(iscsi={"chap": chap}).start()
    kit.discover()
    kit.set_chap(IQN, "127.0.0.1:3260", "backupadmin", "wrong-pass-16chr")
    assert kit.login(IQN, check=False).returncode != 0
    assert kit.session_ids() == []
    kit.set_chap(IQN, "127.0.0.1:3260", "backupadmin", "s3cret-pass-16ch")
    kit.login(IQN)
    _attached(2)


def test_mutual_chap(vtl: Callable[..., kit.Daemon]) -> None:
    vtl(
        iscsi={
            "chap": {"userid": "backupadmin", "password": "s3cret-pass-16ch"},
            "mutual_chap": {"userid": "thurtarget", "password": "target-pass-16ch"},
        }
    ).start()
    kit.discover()
    kit.set_chap(
        IQN, "127.0.0.1:3260", "backupadmin", "s3cret-pass-16ch", ("thurtarget", "bad-target-pass1")
    )
    assert kit.login(IQN, check=False).returncode != 0
    kit.set_chap(
        IQN, "127.0.0.1:3260", "backupadmin", "s3cret-pass-16ch", ("thurtarget", "target-pass-16ch")
    )
    kit.login(IQN)
    _attached(2)


def test_kill9_restart_keeps_session(vtl: Callable[..., kit.Daemon]) -> None:
    daemon = vtl().start()
    kit.discover()
    kit.login(IQN)
    devs = _attached(2)
    sessions = kit.session_ids()
    node = _tape_nodes(devs)[0]
    kit.sh(f"mt-st -f {node} status")
    daemon.kill9()
    # The kernel objects outlive the handler; the initiator stays logged in.
    assert kit.kernel_objects(IQN, "thurvtl")
    daemon.start()
    assert kit.session_ids() == sessions
    # The first command after the gap may see the reset unit attention; st retries it.
    kit.wait_for(
        "mt-st status after reattach",
        lambda: kit.sh(f"mt-st -f {node} status", check=False).returncode == 0,
        60,
    )
    kit.sh(f"mtx -f {_changer_sg(devs)} status")
    assert kit.session_ids() == sessions


def test_upgrade_restart_leaves_kernel_objects(vtl: Callable[..., kit.Daemon]) -> None:
    daemon = vtl().start()
    kit.discover()
    kit.login(IQN)
    devs = _attached(2)
    sessions = kit.session_ids()
    assert daemon.signal(signal.SIGUSR1) == 0
    assert kit.kernel_objects(IQN, "thurvtl")
    daemon.start()
    kit.sh(f"mtx -f {_changer_sg(devs)} status")
    assert kit.session_ids() == sessions


def test_command_caught_in_the_gap_fails_back(vtl: Callable[..., kit.Daemon]) -> None:
    """A command sent while no handler serves the ring must neither hang nor be
    replayed later: the reattach resets the ring and fails it back (CHECK CONDITION)."""
    daemon = vtl().start()
    kit.discover()
    kit.login(IQN)
    devs = _attached(2)
    tape_sg = next(d.sg for d in devs if d.kind == "tape")
    # TEST UNIT READY through sg_raw (trixie's sg_turs 1.48 sends no CDB at all).
    tur = f"sg_raw {tape_sg} 00 00 00 00 00 00"
    kit.sh(tur, check=False)  # consume the power-on unit attention
    daemon.kill9()
    # This TEST UNIT READY waits in the ring: nobody serves it until the restart.
    caught = subprocess.Popen(
        tur.split(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    time.sleep(3)
    assert caught.poll() is None, "the command completed with no handler serving the ring"
    daemon.start()
    out, _ = caught.communicate(timeout=120)
    print(out.decode(errors="replace"))
    assert caught.returncode != 0, "the command from the gap was completed as if served"
    # The LU serves normally afterwards (after the reset unit attention).
    kit.wait_for(
        "the drive to answer again",
        lambda: kit.sh(f"sg_inq {tape_sg}", check=False).returncode == 0,
        60,
    )

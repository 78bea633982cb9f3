"""The changer through the real kernel: thurvtl + mtx/tapeinfo/loaderinfo over iSCSI.

Cartridges are created with `thurvtl`, then moved with mtx (MOVE/EXCHANGE MEDIUM,
READ ELEMENT STATUS, INITIALIZE ELEMENT STATUS through LIO + TCMU). After every step
mtx's view and thurvtl's view of the inventory must agree element by element, which
also pins the numbering contract: thurvtl's slot numbers and drive indexes are mtx's.
Refused moves must leave the inventory exactly as it was, and the inventory (with the
cartridges in drives, reloaded) must survive kill -9 and an upgrade restart.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable

from tests.e2e import kit
from tests.e2e.tape_kit import attached

IQN = "iqn.2026-11.io.thur:e2e"
# write_config's library: 8 slots, 2 mail slots (mtx slots 9 and 10), 2 drives.
LIBRARY = {"num_slots": 8, "num_mail_slots": 2, "num_drives": 2}
DRIVE_RE = re.compile(r"^Data Transfer Element (\d+):(Empty|Full)(.*)$")
SLOT_RE = re.compile(r"^\s*Storage Element (\d+)( IMPORT/EXPORT)?:(Empty|Full)(.*)$")
TAG_RE = re.compile(r"VolumeTag\s*=\s*(\S+)")

State = dict[str, str | None]


def _changer_sg(devs: list[kit.ScsiDev]) -> str:
    return next(d.sg for d in devs if d.kind == "mediumx")


def _drive(devs: list[kit.ScsiDev], index: int) -> kit.ScsiDev:
    """Drive `index` is LUN index + 1 (the changer is LUN 0)."""
    return next(d for d in devs if d.kind == "tape" and d.hctl.split(":")[-1] == str(index + 1))


def mtx_state(sg: str) -> tuple[State, set[str]]:
    """`mtx status` as {"drive 0": barcode or None, "slot 1": ...} and the mail slots."""
    def status() -> str | None:
        # The first command after a restart may meet the reset unit attention.
        proc = kit.sh(f"mtx -f {sg} status", check=False)
        return proc.stdout if proc.returncode == 0 else None

    out = kit.wait_for("mtx status", status, 60)
    state: State = {}
    mail: set[str] = set()
    for line in out.splitlines():
        if m := DRIVE_RE.match(line):
            tag = TAG_RE.search(m.group(3))
            state[f"drive {m.group(1)}"] = tag.group(1) if tag else (
                "?" if m.group(2) == "Full" else None)
        elif m := SLOT_RE.match(line):
            key = f"slot {m.group(1)}"
            tag = TAG_RE.search(m.group(4))
            state[key] = tag.group(1) if tag else ("?" if m.group(3) == "Full" else None)
            if m.group(2):
                mail.add(key)
    return state, mail


def thurvtl_state(daemon: kit.Daemon) -> State:
    inventory = json.loads(daemon.cli("changer inventory --json").stdout)
    return {
        f"{'drive' if e['type'] == 'drive' else 'slot'} {e['number']}": e["barcode"]
        for e in inventory["elements"]
        if e["type"] != "transport"
    }


def expect(daemon: kit.Daemon, sg: str, **where: str) -> State:
    """Both views agree, and hold exactly the given cartridges (slot_3="ABC...")."""
    wanted: State = {f"drive {i}": None for i in range(2)}
    wanted.update({f"slot {n}": None for n in range(1, 11)})
    wanted.update({k.replace("_", " "): v for k, v in where.items()})
    ours = thurvtl_state(daemon)
    theirs, mail = mtx_state(sg)
    assert ours == wanted, f"thurvtl: {ours}"
    assert theirs == wanted, f"mtx: {theirs}"
    assert mail == {"slot 9", "slot 10"}
    return ours


def refused(cmd: str, daemon: kit.Daemon) -> None:
    """A move the library must refuse with sense, leaving the inventory alone."""
    before = daemon.cli("changer inventory --json").stdout
    proc = kit.sh(cmd, check=False)
    assert proc.returncode != 0, f"`{cmd}` should have failed"
    assert daemon.cli("changer inventory --json").stdout == before


def _online(node: str) -> bool:
    # The first open after a load sees UNIT ATTENTION 28/00; st retries it.
    proc = kit.sh(f"mt-st -f {node} status", check=False)
    return proc.returncode == 0 and "ONLINE" in proc.stdout


def test_mtx_moves_and_refusals(vtl: Callable[..., kit.Daemon]) -> None:
    daemon = vtl(library=LIBRARY).start()
    daemon.cli("cartridge create E2E001L8")  # first empty slot: 1
    daemon.cli("cartridge create E2E002L8 --slot 2")
    daemon.cli("cartridge create E2E005L8 --slot 5 --worm")
    daemon.cli("cartridge create CLN001L8 --mail-slot 1")  # mtx slot 9
    assert daemon.cli("cartridge create e2e009l8", check=False).returncode == 1
    assert daemon.cli("cartridge create E2E009L8 --slot 2", check=False).returncode == 1
    daemon.cli("cartridge list")
    kit.discover()
    kit.login(IQN)
    devs = attached()
    sg = _changer_sg(devs)
    state = dict(slot_1="E2E001L8", slot_2="E2E002L8", slot_5="E2E005L8", slot_9="CLN001L8")
    expect(daemon, sg, **state)
    kit.sh(f"loaderinfo -f {sg}")

    # load / unload, and the drive LU sees the cartridge.
    kit.sh(f"mtx -f {sg} load 1 0")
    expect(daemon, sg, **{**state, "slot_1": None, "drive_0": "E2E001L8"})
    drive0 = _drive(devs, 0)
    kit.wait_for("drive 0 online", lambda: _online(drive0.node.replace("/dev/st", "/dev/nst")),
                 60)
    kit.sh(f"tapeinfo -f {drive0.sg}")
    kit.sh(f"tapeinfo -f {_drive(devs, 1).sg}")  # and an empty drive
    info = json.loads(daemon.cli("cartridge info E2E001L8 --json").stdout)
    assert info["location"]["element"] == "drive 0" and info["loaded"]
    refused(f"mtx -f {sg} load 2 0", daemon)  # drive full
    kit.sh(f"mtx -f {sg} unload 1 0")
    expect(daemon, sg, **state)

    # transfer, exchange, inventory.
    kit.sh(f"mtx -f {sg} transfer 2 3")
    state = {**state, "slot_2": None, "slot_3": "E2E002L8"}
    expect(daemon, sg, **state)
    kit.sh(f"mtx -f {sg} exchange 1 3")
    state = {**state, "slot_1": "E2E002L8", "slot_3": "E2E001L8"}
    expect(daemon, sg, **state)
    kit.sh(f"mtx -f {sg} inventory")
    expect(daemon, sg, **state)

    # Errors come back as sense and change nothing.
    refused(f"mtx -f {sg} load 4 0", daemon)  # empty source
    refused(f"mtx -f {sg} transfer 1 5", daemon)  # full destination
    refused(f"mtx -f {sg} transfer 4 6", daemon)  # empty source
    refused(f"mtx -f {sg} unload 4 1", daemon)  # empty drive
    expect(daemon, sg, **state)

    # Export to a mail slot, blocked while the changer is locked by PREVENT.
    kit.sh(f"sg_prevent --prevent=1 {sg}")
    refused(f"mtx -f {sg} transfer 5 10", daemon)
    kit.sh(f"sg_prevent --allow {sg}")
    kit.sh(f"mtx -f {sg} transfer 5 10")
    state = {**state, "slot_5": None, "slot_10": "E2E005L8"}
    expect(daemon, sg, **state)
    # and import back from a mail slot through thurvtl, with mtx watching.
    moved = daemon.cli("changer load 10 1").stdout
    assert moved.strip() == "E2E005L8: slot 10 (mail slot 2) -> drive 1"
    daemon.cli("changer unload 1 4")
    state = {**state, "slot_10": None, "slot_4": "E2E005L8"}
    expect(daemon, sg, **state)
    kit.logout_all()
    assert daemon.signal(signal.SIGTERM) == 0


def test_inventory_survives_kill9_and_upgrade_restart(vtl: Callable[..., kit.Daemon]) -> None:
    daemon = vtl(library=LIBRARY).start()
    daemon.cli("cartridge create KIL001L8 --slot 1")
    daemon.cli("cartridge create KIL002L8 --slot 2")
    daemon.cli("cartridge create KIL003L8 --mail-slot 2")
    kit.discover()
    kit.login(IQN)
    devs = attached()
    sg = _changer_sg(devs)
    kit.sh(f"mtx -f {sg} load 1 1")
    kit.sh(f"mtx -f {sg} transfer 2 6")
    state = dict(drive_1="KIL001L8", slot_6="KIL002L8", slot_10="KIL003L8")
    before = expect(daemon, sg, **state)
    drive1 = _drive(devs, 1).node.replace("/dev/st", "/dev/nst")
    kit.wait_for("drive 1 online", lambda: _online(drive1), 60)
    sessions = kit.session_ids()

    for restart in ("kill -9", "SIGUSR1"):
        print(f"--- restart by {restart}", flush=True)
        if restart == "kill -9":
            daemon.kill9()
        else:
            assert daemon.signal(signal.SIGUSR1) == 0
        assert kit.kernel_objects(IQN, "thurvtl")
        daemon.start()
        assert kit.session_ids() == sessions
        assert expect(daemon, sg, **state) == before
        # The cartridge is back in its drive, which says so with a unit attention.
        kit.wait_for("drive 1 online again", lambda: _online(drive1), 60)
        info = json.loads(daemon.cli("cartridge info KIL001L8 --json").stdout)
        assert info["location"]["element"] == "drive 1" and info["loaded"]

    kit.sh(f"mtx -f {sg} unload 1 1")
    state = {**state, "drive_1": None, "slot_1": "KIL001L8"}
    expect(daemon, sg, **state)
    kit.logout_all()
    assert daemon.signal(signal.SIGTERM) == 0

    # A smaller library that would orphan a cartridge is refused at start, by name.
    small = {**daemon.config, "library": {**LIBRARY, "num_slots": 4}}
    daemon.config_path.write_text(json.dumps(small))  # JSON is YAML
    proc = subprocess.run(
        [sys.executable, "-m", "thur.vtl.daemon", "--config", str(daemon.config_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    print(proc.stdout + proc.stderr)
    assert proc.returncode == 2
    assert "cannot shrink num_slots to 4: slot 6 holds KIL002L8; move it first" in proc.stderr
    assert kit.kernel_objects(IQN, "thurvtl") == []

"""SBC conformance of a Thur VSA volume (libiscsi's iscsi-test-cu) and persistent
reservations end to end (sg_persist from two open-iscsi initiators, APTPL across
restarts), through the real kernel: LIO + TCMU + thurvsad.

One thurvsad on a fresh data dir with two initiators in its ACL. iscsi-test-cu logs in
as both itself (its reservation and multipath tests need a second I_T nexus). Every
failure must be in KNOWN_FAILURES and every skip in KNOWN_SKIPS, each with its reason;
docs/CONFORMANCE.md carries the same lists and the measured counts.

THUR_CONFORMANCE=all runs every libiscsi test (23 min under TCG with two other VMs on
the machine, measured); the default is the CI selection: everything except the suites in
SLOW_SUITES, which only repeat the READ/WRITE/VERIFY checks already covered by their
10-byte forms.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from configfs.sessions import iscsi_sessions
from tests.e2e import kit, libiscsi
from tests.e2e.kit import VsaDaemon
from thur.config import DEFAULT_LIO_DB_ROOT

IQN = "iqn.2026-11.io.thur:conformance"
INITIATOR_A = "iqn.2026-11.io.thur:initiator-a"
INITIATOR_B = "iqn.2026-11.io.thur:initiator-b"
PORTAL = "127.0.0.1:3260"
# Fewer than 65536 blocks: WriteSame16.Unmap would otherwise send one 256 MiB WRITE(16),
# past the 8 MiB MAXIMUM TRANSFER LENGTH of VPD B0h (refused 05/24/00, as SBC requires).
CU_VOLUME_SIZE = "128M"
CU_TIMEOUT = 3600.0

# Test (fnmatch pattern on Suite.Test) -> why it fails. Mirrored in docs/CONFORMANCE.md.
KNOWN_FAILURES: dict[str, str] = {
    "Reserve6.Logout": (
        "a race in the kernel path: LIO releases an SPC-2 reservation when it frees the "
        "session (transport_deregister_session), after the Logout response, and under "
        "load that lands after the test's next RESERVE(6) from the other initiator; "
        "RESERVE/RELEASE are LIO's own (they never reach the handler), and the release "
        "itself is checked: every Reserve6 test starts only once pr/res_holder is clear"),
    "iSCSIResiduals.*": (
        "LIO hands a TCMU device the transport's expected length, not the CDB's "
        "(passthrough_parse_cdb), so it never sets an overflow residual; the handler can "
        "only report a short data-in (READ_LEN)"),
}

# Test pattern -> why libiscsi skips it. Mirrored in docs/CONFORMANCE.md.
KNOWN_SKIPS: dict[str, str] = {
    "OrWrite.*": "ORWRITE is not implemented (deliberately)",
    "WriteAtomic16.*": "WRITE ATOMIC(16) is not implemented (deliberately)",
    "Sanitize.*": "SANITIZE is not implemented (deliberately; delete the volume instead)",
    "ExtendedCopy.Large": "EXTENDED COPY segment type 0Ah (block to block with byte "
                          "offsets) is not implemented; 02h is",
    "CompareAndWrite.InvalidDataOutSize": "one logical block per physical block (LBPPB 1)",
    "WriteSame1[06].UnmapUnaligned": "one logical block per physical block (LBPPB 1)",
    "WriteSame1[06].InvalidDataOutSize": "one logical block per physical block (LBPPB 1)",
    "PreventAllow.*": "a volume is not removable medium",
    "StartStopUnit.Simple": "a volume is not removable medium",
    "ReadOnly.ReadOnlySBC": "the volume under test is writable",
    "Reserve6.Target*Reset": "LIO refuses TARGET COLD/WARM RESET task management "
                             "(iSCSI node attributes tmr_*_reset, not in configfs)",
    "iSCSICHAP.*": "needs a CHAP session (CHAP is covered by test_configfs_kernel.py)",
}

# Suites left out of the default (CI) selection for time: the 12- and 16-byte forms of
# READ/WRITE/VERIFY/WRITE AND VERIFY, whose 10-byte forms stay in. Each loops over
# 1..256-block transfers at both ends of the LU (~1 min per suite under TCG); the CDB
# decoding they add is covered by tests/unit/test_scsi_sbc_io.py.
SLOW_SUITES: tuple[str, ...] = tuple(
    f"{cmd}{size}" for cmd in ("Read", "Write", "Verify", "WriteVerify") for size in (12, 16))

# Each suite runs in its own iscsi-test-cu invocation, and each invocation starts only
# once LIO has freed every session of the target and no LU holds an SPC-2 reservation:
# a reservation is released only when LIO frees its holder's session, asynchronously,
# and some tests leave one behind (Sanitize.Reservations drops a reserving connection
# without a logout; Reserve6.Target*Reset reserve and cannot reset; Reserve6.Logout when
# it loses its race). Under load that failed the next suite with RESERVATION CONFLICT.
#
# iSCSITMF: AbortTaskSimpleAsync logs its session out and leaves libiscsi with none, so
# the two tests after it in the suite each run alone (they would be skipped as "Not an
# iSCSI device").
SPLIT_SUITES = ("iSCSITMF",)
ALONE = ("iSCSITMF.LUNResetSimpleAsync", "iSCSITMF.LogoutDuringIOAsync")
# SPC-2 RESERVE(6) tests run on an LU of their own, one test per invocation.
RESERVE_SUITE = "Reserve6"
RESERVE_LUN = 2
RELEASE_TIMEOUT = 120.0


def _known(name: str, table: dict[str, str]) -> str | None:
    return next((why for pattern, why in table.items() if fnmatch.fnmatchcase(name, pattern)),
                None)


@pytest.fixture(scope="module")
def vsa() -> Iterator[VsaDaemon]:
    kit.start_iscsid()
    kit.logout_all()
    data_dir = Path(tempfile.mkdtemp(prefix="thurvsa-conf-", dir="/var/tmp"))
    config_path = data_dir.parent / f"{data_dir.name}.yaml"
    config = {
        "data_dir": str(data_dir),
        "admin_socket": str(data_dir / "admin.sock"),
        "iscsi": {"listen": [PORTAL], "target_iqn": IQN,
                  "initiators": [INITIATOR_A, INITIATOR_B]},
    }
    config_path.write_text(yaml.safe_dump(config))
    daemon = VsaDaemon(config_path, config, data_dir.parent / f"{data_dir.name}.log")
    daemon.start()
    try:
        yield daemon
    finally:
        kit.logout_all()
        for iface in ("thur-a", "thur-b"):
            kit.sh(f"iscsiadm -m iface -I {iface} -o delete", check=False)
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.signal(signal.SIGTERM)
        subprocess.run([sys.executable, "-m", "thur.vsa.daemon", "--config", str(config_path),
                        "--teardown"], check=False, timeout=120)
        print(f"--- {daemon.log_path.name} ---\n{daemon.log()}")
        shutil.rmtree(data_dir, ignore_errors=True)


# ---- libiscsi --------------------------------------------------------------------------


def _selection() -> list[tuple[str, int]]:
    """The -t argument and the LUN of each iscsi-test-cu invocation, in order."""
    listed = kit.sh("iscsi-test-cu --list").stdout.split()
    suites = [s.removeprefix("ALL.") for s in listed if re.fullmatch(r"ALL\.[^.]+", s)]
    tests = [t.removeprefix("ALL.") for t in listed
             if t.startswith("ALL.") and t.count(".") == 2]
    full = os.environ.get("THUR_CONFORMANCE", "").lower() == "all"
    runs = [(f"ALL.{s}", 0) for s in suites
            if s not in (*SPLIT_SUITES, RESERVE_SUITE) and (full or s not in SLOW_SUITES)]
    split = [f"ALL.{t}" for t in tests if t.split(".")[0] in SPLIT_SUITES and t not in ALONE]
    runs += [(",".join(split), 0), *((f"ALL.{t}", 0) for t in ALONE)]
    runs += [(f"ALL.{t}", RESERVE_LUN) for t in tests if t.split(".")[0] == RESERVE_SUITE]
    return runs


def _res_holder(serial: str) -> str:
    """LIO's pr/res_holder of the backstore whose unit serial is `serial`."""
    for wwn in Path("/sys/kernel/config/target/core").glob("user_*/*/wwn/vpd_unit_serial"):
        if wwn.read_text().split(":")[-1].strip() == serial:
            return (wwn.parent.parent / "pr" / "res_holder").read_text().strip()
    raise AssertionError(f"no backstore with unit serial {serial}")


def _wait_released(serials: list[str]) -> None:
    """Until LIO has freed every session of the target and no LU holds an SPC-2
    reservation (a persistent, SPC-3 one outlives sessions by design: not waited for)."""
    kit.wait_for(
        "LIO to free the sessions and their SPC-2 reservations",
        lambda: not iscsi_sessions(IQN)
        and not any("SPC-2 Reservation:" in _res_holder(s) for s in serials),
        RELEASE_TIMEOUT)


def _run_cu(selection: str, url: str) -> dict[str, libiscsi.TestResult]:
    # The same URL twice is a second path to the same LU: MultipathIO then runs.
    found, _ = libiscsi.run(
        ["--dataloss", "--allow-sanitize", "-i", INITIATOR_A, "-I", INITIATOR_B,
         "-t", selection, url, url], timeout=CU_TIMEOUT)
    assert found, f"iscsi-test-cu ran no test of {selection}"
    return found


@pytest.mark.timeout(CU_TIMEOUT + 600)
def test_libiscsi_conformance(vsa: VsaDaemon) -> None:
    vsa.cli(f"volume create cu --size {CU_VOLUME_SIZE} --lun 0")
    vsa.cli(f"volume create r6 --size 64M --lun {RESERVE_LUN}")
    serials = [json.loads(vsa.cli(f"volume info {name} --json").stdout)["serial"]
               for name in ("cu", "r6")]
    host = PORTAL.split(":")[0]
    results: dict[str, libiscsi.TestResult] = {}
    for selection, lun in _selection():
        _wait_released(serials)
        results.update(_run_cu(selection, f"iscsi://{host}/{IQN}/{lun}"))
    counts = libiscsi.counts(results)
    slowest = sorted(results.values(), key=lambda r: -r.seconds)[:15]
    print(f"libiscsi: {len(results)} tests: {counts}", flush=True)
    print("slowest: " + ", ".join(f"{r.name} {r.seconds:.0f}s" for r in slowest))
    print("total seconds by suite: " + ", ".join(
        f"{suite} {secs:.0f}" for suite, secs in sorted(
            _by_suite(results).items(), key=lambda kv: -kv[1])))
    unfinished = [r.name for r in results.values() if not r.status]
    failed = {r.name for r in results.values() if r.status == libiscsi.FAILED}
    skipped = {r.name: r.skip_reason for r in results.values()
               if r.status == libiscsi.SKIPPED}
    print("failed: " + ", ".join(sorted(failed)))
    print("skipped: " + "; ".join(f"{n} ({why})" for n, why in sorted(skipped.items())))
    assert not unfinished, f"no result for {unfinished}"
    assert {n for n in failed if _known(n, KNOWN_FAILURES) is None} == set()
    assert {n for n in skipped if _known(n, KNOWN_SKIPS) is None} == set()


def _by_suite(results: dict[str, libiscsi.TestResult]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in results.values():
        suite = r.name.split(".")[0]
        out[suite] = out.get(suite, 0.0) + r.seconds
    return out


# ---- persistent reservations: two open-iscsi initiators ---------------------------------

KEY_A, KEY_B = "0xa1", "0xb2"
WRITE_EXCLUSIVE = 1


def _iface_login(iface: str, initiator: str) -> None:
    kit.sh(f"iscsiadm -m iface -I {iface} -o new", check=False)
    kit.sh(f"iscsiadm -m iface -I {iface} -o update -n iface.initiatorname -v {initiator}")
    kit.sh(f"iscsiadm -m discovery -t sendtargets -p {PORTAL} -I {iface}")
    kit.sh(f"iscsiadm -m node -T {IQN} -p {PORTAL} -I {iface} --login", timeout=120)


def _disk_of(initiator: str, lun: int) -> str | None:
    """The sd node of LUN `lun` in the iSCSI session of `initiator`."""
    for session in Path("/sys/class/iscsi_session").glob("session*"):
        if (session / "initiatorname").read_text().strip() != initiator:
            continue
        for block in (session / "device").glob(f"target*/*:*:*:{lun}/block/*"):
            return f"/dev/{block.name}"
    return None


@pytest.fixture(scope="module")
def two_paths(vsa: VsaDaemon) -> tuple[str, str]:
    """The PR volume (LUN 1) as seen by initiator A and by initiator B."""
    vsa.cli("volume create pr --size 256M --lun 1")
    _iface_login("thur-a", INITIATOR_A)
    _iface_login("thur-b", INITIATOR_B)
    kit.settle()
    a = kit.wait_for("A's disk", lambda: _disk_of(INITIATOR_A, 1), kit.DEVICE_TIMEOUT)
    b = kit.wait_for("B's disk", lambda: _disk_of(INITIATOR_B, 1), kit.DEVICE_TIMEOUT)
    kit.sh("lsscsi -g")
    assert a != b
    return a, b


# A unit attention is the target telling each I_T nexus about an event (power on,
# REPORTED LUNS DATA HAS CHANGED while a restart exports its LUNs one by one): a host
# retries the command, and so do these helpers; _clear_and_check looks at one itself.
UA_RETRIES = 5


def _past_unit_attentions(
        run: Callable[[], subprocess.CompletedProcess[str]]) -> subprocess.CompletedProcess[str]:
    for _ in range(UA_RETRIES):
        proc = run()
        if proc.returncode == 0 or "unit attention" not in (proc.stdout + proc.stderr).lower():
            return proc
        print(f"unit attention, retrying: {proc.stdout + proc.stderr}")
    return proc


def _persist(args: str, dev: str, check: bool = True) -> str:
    """sg_persist's output; with `check`, past unit attentions and asserting success
    (without, the first answer as it came, unit attention included)."""
    def run() -> subprocess.CompletedProcess[str]:
        return kit.sh(f"sg_persist {args} {dev}", check=False, timeout=120)

    proc = _past_unit_attentions(run) if check else run()
    out = proc.stdout + proc.stderr
    assert not check or proc.returncode == 0, \
        f"sg_persist {args} {dev} exited {proc.returncode}:\n{out}"
    return out


def _clear_and_check(a: str, b: str) -> None:
    """CLEAR from A drops every registration. B's I_T nexus gets RESERVATIONS PREEMPTED,
    unless a command of the host's own consumed that unit attention first."""
    _persist(f"--out --clear --param-rk={KEY_A}", a)
    first = _persist("--in --read-keys", b, check=False).lower()
    if "unit attention" in first:
        assert "reservations preempted" in first, first
        first = _persist("--in --read-keys", b).lower()
    assert "no registered" in first, first


def _write_block(dev: str, lba: int = 0) -> subprocess.CompletedProcess[str]:
    """WRITE(10) of one 4 KiB block through SG_IO: the status comes back unretried."""
    block = Path(tempfile.mkstemp(prefix="blk-", dir="/var/tmp")[1])
    block.write_bytes(b"\x5a" * 4096)
    cdb = f"2a 00 {lba >> 24 & 255:02x} {lba >> 16 & 255:02x} {lba >> 8 & 255:02x} " \
          f"{lba & 255:02x} 00 00 01 00"
    try:
        return _past_unit_attentions(
            lambda: kit.sh(f"sg_raw -s 4096 -i {block} {dev} {cdb}", check=False))
    finally:
        block.unlink()


def _read_block(dev: str) -> subprocess.CompletedProcess[str]:
    return _past_unit_attentions(lambda: kit.sh(
        f"sg_raw -r 4096 -o /dev/null {dev} 28 00 00 00 00 00 00 00 01 00", check=False))


def _conflict(proc: subprocess.CompletedProcess[str]) -> bool:
    return "reservation conflict" in (proc.stdout + proc.stderr).lower()


def _assert_a_holds_write_exclusive(a: str, b: str) -> None:
    keys = _persist("--in --read-keys", b)
    assert KEY_A in keys and KEY_B in keys, keys
    held = _persist("--in --read-reservation", b)
    assert f"Key={KEY_A}" in held and "Write Exclusive" in held, held
    refused = _write_block(b)
    assert refused.returncode != 0 and _conflict(refused), refused.stdout + refused.stderr
    assert _read_block(b).returncode == 0  # Write Exclusive: B may still read
    assert _write_block(a).returncode == 0


def test_pr_second_initiator_gets_reservation_conflict(two_paths: tuple[str, str]) -> None:
    a, b = two_paths
    _persist(f"--out --register --param-sark={KEY_A}", a)
    _persist(f"--out --register --param-sark={KEY_B}", b)
    _persist(f"--out --reserve --param-rk={KEY_A} --prout-type={WRITE_EXCLUSIVE}", a)
    _assert_a_holds_write_exclusive(a, b)
    # B cannot release A's reservation; A can, and then B writes.
    _persist(f"--out --release --param-rk={KEY_B} --prout-type={WRITE_EXCLUSIVE}", b,
             check=False)
    assert _conflict(_write_block(b))
    _persist(f"--out --release --param-rk={KEY_A} --prout-type={WRITE_EXCLUSIVE}", a)
    assert _write_block(b).returncode == 0
    _clear_and_check(a, b)


def _aptpl_file(vsa: VsaDaemon) -> Path:
    """LIO's APTPL file of the PR volume: db_root/pr/aptpl_<vpd_unit_serial>."""
    serial = json.loads(vsa.cli("volume info pr --json").stdout)["serial"]
    db_root = vsa.config.get("lio_db_root", DEFAULT_LIO_DB_ROOT)
    path = Path(db_root) / "pr" / f"aptpl_{serial}"
    assert path.exists(), sorted(path.parent.iterdir())
    return path


def _after_restart(a: str, b: str) -> None:
    """Sessions recover on their own (open-iscsi reconnects); wait until both answer."""
    for dev in (a, b):
        kit.wait_for(f"{dev} to answer again",
                     lambda d=dev: kit.sh(f"sg_turs {d}", check=False).returncode == 0, 180)


def test_pr_aptpl_survives_sigterm_and_kill9(vsa: VsaDaemon, two_paths: tuple[str, str]) -> None:
    a, b = two_paths
    _persist(f"--out --register --param-sark={KEY_A} --param-aptpl", a)
    _persist(f"--out --register --param-sark={KEY_B} --param-aptpl", b)
    _persist(f"--out --reserve --param-rk={KEY_A} --prout-type={WRITE_EXCLUSIVE}", a)
    caps = _persist("--in --report-capabilities", a)
    assert re.search(r"PTPL_A\)?: 1", caps), caps
    saved = _aptpl_file(vsa).read_text()
    assert INITIATOR_A in saved and INITIATOR_B in saved and "res_holder=1" in saved, saved
    _assert_a_holds_write_exclusive(a, b)

    # A clean stop removes the backstore; the next start replays the APTPL file into it.
    assert vsa.signal(signal.SIGTERM) == 0
    assert kit.kernel_objects(IQN, "thurvsa") == []
    vsa.start()
    _after_restart(a, b)
    _assert_a_holds_write_exclusive(a, b)

    # kill -9 leaves the kernel objects (and LIO's PR state) in place; the restart
    # reattaches without disturbing them.
    vsa.kill9()
    vsa.start()
    _after_restart(a, b)
    _assert_a_holds_write_exclusive(a, b)
    _clear_and_check(a, b)
    assert "PR_REG_START" not in _aptpl_file(vsa).read_text()  # nothing left to replay

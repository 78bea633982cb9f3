"""Thur VSA over NVMe/TCP through the real kernel: TCMU -> tcm_loop disk -> nvmet ->
nvme-tcp on 127.0.0.1:4420, next to iSCSI on the same volumes.

One thurvsad (transport [iscsi, nvmetcp]) on a fresh data dir under /var/tmp. The
tests run in file order: discover/connect, fio, deallocate and write-zeroes, the
same bytes over iSCSI and NVMe, resize, runtime create/delete, kill -9 and a clean
stop (only our nvmet objects go); then a restart with per-host DH-HMAC-CHAP
(one-way and bidirectional), kill -9 and `--teardown`; last, TLS refused.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import kit

IQN = "iqn.2026-11.io.thur:vsanvme"
NQN = "nqn.2026-11.io.thur:vsanvme"
PORT = "127.0.0.1:4420"
TCP = "-t tcp -a 127.0.0.1 -s 4420"
NVMET = Path("/sys/kernel/config/nvmet")
BLOCK = 4096
# Objects another tool owns: they must survive our stop and our --teardown.
FOREIGN_HOST = "nqn.2026-11.io.other:host"
FOREIGN_PORT = "4421"


def _host(n: int) -> tuple[str, str]:
    hostid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"thur-e2e-host{n}"))
    return f"nqn.2014-08.org.nvmexpress:uuid:{hostid}", hostid


def _write_config(daemon: kit.VsaDaemon, **nvme: Any) -> None:
    daemon.config["nvme"] = {"subsystem_nqn": NQN, "listen": [PORT], **nvme}
    daemon.config_path.write_text(yaml.safe_dump(daemon.config))


@pytest.fixture(scope="module")
def vsa() -> Iterator[kit.VsaDaemon]:
    kit.start_iscsid()
    kit.logout_all()
    for module in ("nvmet", "nvmet_tcp", "nvme_tcp", "nvme_fabrics"):
        kit.sh(f"modprobe {module}")
    data_dir = Path(tempfile.mkdtemp(prefix="thurvsa-nvme-", dir="/var/tmp"))
    config_path = data_dir.parent / f"{data_dir.name}.yaml"
    config = {
        "data_dir": str(data_dir),
        "admin_socket": str(data_dir / "admin.sock"),
        "iscsi": {"listen": ["127.0.0.1:3260"], "target_iqn": IQN},
        "instance": "thurnvme",
        "transport": ["iscsi", "nvmetcp"],
    }
    daemon = kit.VsaDaemon(config_path, config, data_dir.parent / f"{data_dir.name}.log")
    _write_config(daemon)
    try:
        yield daemon
    finally:
        kit.sh("nvme disconnect-all", check=False)
        kit.logout_all()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.signal(signal.SIGTERM)
        daemon.teardown()
        _remove_foreign()
        if daemon.log_path.exists():
            print(f"--- {daemon.log_path.name} ---\n{daemon.log()}")
        shutil.rmtree(data_dir, ignore_errors=True)


# --- nvmet and nvme-cli helpers ----------------------------------------------------


def nvmet_objects() -> set[str]:
    """Every nvmet object in configfs (anyone's), as relative paths."""
    found: set[str] = set()
    for group in ("hosts", "subsystems", "ports"):
        base = NVMET / group
        for d in base.iterdir() if base.exists() else ():
            found.add(f"{group}/{d.name}")
            for sub in ("namespaces", "allowed_hosts", "subsystems"):
                if (d / sub).is_dir():
                    found |= {f"{group}/{d.name}/{sub}/{e.name}" for e in (d / sub).iterdir()}
    return found


def _make_foreign() -> None:
    (NVMET / "hosts" / FOREIGN_HOST).mkdir()
    port = NVMET / "ports" / "777"
    port.mkdir()
    for attr, value in (("trtype", "tcp"), ("adrfam", "ipv4"), ("traddr", "127.0.0.1"),
                        ("trsvcid", FOREIGN_PORT)):
        (port / f"addr_{attr}").write_text(value)


def _remove_foreign() -> None:
    for path in (NVMET / "ports" / "777", NVMET / "hosts" / FOREIGN_HOST):
        if path.exists():
            path.rmdir()


FOREIGN = {f"hosts/{FOREIGN_HOST}", "ports/777"}


def namespaces() -> dict[int, str]:
    """nsid -> /dev/nvmeXnY of our subsystem, as the host sees it now."""
    found: dict[int, str] = {}
    for blk in Path("/sys/block").glob("nvme*"):
        if not re.fullmatch(r"nvme\d+n\d+", blk.name):
            continue  # nvmeXcYnZ: a hidden multipath path
        try:
            subsysnqn = (blk / "device" / "subsysnqn").read_text().strip()
            nsid = int((blk / "nsid").read_text())
        except OSError:
            continue
        if subsysnqn == NQN:
            found[nsid] = f"/dev/{blk.name}"
    return found


def namespace(nsid: int = 1) -> str:
    dev = kit.wait_for(f"namespace {nsid} on the host", lambda: namespaces().get(nsid),
                       kit.DEVICE_TIMEOUT)
    kit.settle()
    return dev


def connect(extra: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
    return kit.sh(f"nvme connect {TCP} -n {NQN} {extra}", check=check, timeout=180)


def disconnect() -> None:
    kit.sh(f"nvme disconnect -n {NQN}", check=False, timeout=180)
    kit.wait_for("the namespaces to go", lambda: not namespaces(), kit.DEVICE_TIMEOUT)


def size_of(node: str) -> int:
    return int(kit.sh(f"blockdev --getsize64 {node}").stdout.strip())


def read_at(node: str, lba: int, count: int = 1) -> bytes:
    return subprocess.run(
        ["dd", f"if={node}", f"bs={BLOCK}", f"skip={lba}", f"count={count}", "iflag=direct",
         "status=none"], capture_output=True, check=True, timeout=120).stdout


def write_at(node: str, lba: int, data: bytes) -> None:
    subprocess.run(
        ["dd", f"of={node}", f"bs={BLOCK}", f"seek={lba}", "oflag=direct", "conv=notrunc",
         "status=none"], input=data, check=True, timeout=120)


def iscsi_disk() -> str:
    """The THUR disk reached over iSCSI (not the tcm_loop disk nvmet exports)."""
    def find() -> str | None:
        for dev in kit.our_devices():
            if dev.kind == "disk" and dev.node.startswith("/dev/sd") and \
                    "/session" in os.path.realpath(f"/sys/block/{dev.node[5:]}"):
                return dev.node
        return None

    node = kit.wait_for("the THUR disk over iSCSI", find, kit.DEVICE_TIMEOUT)
    kit.settle()
    return node


# --- any host ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def nvme(vsa: kit.VsaDaemon) -> str:
    _make_foreign()
    vsa.start()
    vsa.cli("volume create vol1 --size 1G")
    vsa.cli("info")
    kit.sh("ls -l /dev/disk/by-id/ | grep wwn-", check=False)
    connect()
    return namespace(1)


def test_discover_and_connect(vsa: kit.VsaDaemon, nvme: str) -> None:
    out = kit.sh(f"nvme discover {TCP}").stdout
    assert f"subnqn:  {NQN}" in out and "trsvcid: 4420" in out, out
    assert size_of(nvme) == 1 << 30
    assert int(kit.sh(f"blockdev --getss {nvme}").stdout.strip()) == BLOCK
    ours = {p for p in nvmet_objects() if NQN in p}
    assert f"subsystems/{NQN}/namespaces/1" in ours
    info = vsa.cli("info --json").stdout
    assert '"nsid": 1' in info and NQN in info


def test_fio_verify_over_nvme(nvme: str) -> None:
    kit.sh(
        f"fio --name=v --filename={nvme} --rw=randwrite --bsrange=4k-256k --size=64M "
        "--verify=crc32c --verify_state_save=0 --direct=1 --ioengine=libaio --iodepth=4",
        timeout=1500,
    )


def test_deallocate_and_write_zeroes(nvme: str) -> None:
    pattern = os.urandom(BLOCK * 16)
    for lba in (1024, 2048):
        write_at(nvme, lba, pattern * 16)  # 256 blocks = 1 MiB, whole 64 KiB pages
        assert read_at(nvme, lba, 256) == pattern * 16
    kit.sh(f"nvme dsm {nvme} --namespace-id=1 --ad --slbs=1024 --blocks=256")
    assert read_at(nvme, 1024, 256) == bytes(BLOCK * 256)
    kit.sh(f"nvme write-zeroes {nvme} --namespace-id=1 --start-block=2048 --block-count=255")
    assert read_at(nvme, 2048, 256) == bytes(BLOCK * 256)
    # The pages are gone from the volume, not just zero-filled: ask the LU itself.
    loop = os.path.realpath(next(p for p in Path("/dev/disk/by-id").glob("wwn-0x6*")))
    out = kit.sh(f"sg_get_lba_status --lba=1024 --maxlen=24 {loop}").stdout
    assert "deallocated" in out.lower(), out


def test_iscsi_and_nvme_read_the_same_bytes(nvme: str) -> None:
    kit.discover()
    kit.login(IQN)
    disk = iscsi_disk()
    over_iscsi, over_nvme = os.urandom(BLOCK * 64), os.urandom(BLOCK * 64)
    write_at(disk, 4096, over_iscsi)
    assert read_at(nvme, 4096, 64) == over_iscsi
    write_at(nvme, 8192, over_nvme)
    assert read_at(disk, 8192, 64) == over_nvme
    kit.logout_all()


def test_resize_reaches_the_nvme_host(vsa: kit.VsaDaemon, nvme: str) -> None:
    vsa.cli("volume resize vol1 --size 2G")
    ctrl = kit.sh(f"nvme list-subsys -o json {nvme}", check=False).stdout
    print(ctrl)
    kit.sh(f"nvme ns-rescan {nvme}", check=False)
    kit.wait_for("the namespace to show 2 GiB", lambda: size_of(nvme) == 2 << 30, 120)


def test_runtime_create_and_delete_namespace(vsa: kit.VsaDaemon, nvme: str) -> None:
    vsa.cli("volume create vol2 --size 1G --lun 5")
    second = namespace(6)  # nsid = LUN + 1, announced to the connected host by AEN
    assert size_of(second) == 1 << 30
    refused = vsa.cli("volume delete vol2", check=False)
    assert refused.returncode == 1 and "in use" in refused.stderr
    vsa.cli("volume delete vol2 --force")
    kit.wait_for("namespace 6 to go", lambda: 6 not in namespaces(), kit.DEVICE_TIMEOUT)
    assert f"subsystems/{NQN}/namespaces/6" not in nvmet_objects()
    assert read_at(nvme, 8192, 1)  # vol1 still serves


def test_kill9_restart_then_clean_stop(vsa: kit.VsaDaemon, nvme: str) -> None:
    data = os.urandom(BLOCK * 8)
    write_at(nvme, 300, data)
    kit.sh(f"nvme flush {nvme} --namespace-id=1")
    before = nvmet_objects()
    vsa.kill9()
    assert nvmet_objects() == before
    vsa.start()
    assert nvmet_objects() == before  # reattached; the apply changed nothing
    assert "configfs: 0 changes applied" in vsa.log()
    kit.wait_for("the namespace to answer", lambda: read_at(nvme, 300, 8) == data, 120)
    # SIGTERM while the host is connected: every object of ours goes, the others stay.
    assert vsa.signal(signal.SIGTERM) == 0
    assert nvmet_objects() == FOREIGN
    kit.sh("nvme disconnect-all", check=False, timeout=180)


# --- DH-HMAC-CHAP -----------------------------------------------------------------


def _key(hostnqn: str) -> str:
    key = kit.sh(f"nvme gen-dhchap-key --nqn {hostnqn}").stdout.strip()
    assert key.startswith("DHHC-1:"), key
    return key


def test_dhchap_one_way_and_bidirectional(vsa: kit.VsaDaemon) -> None:
    (h1, id1), (h2, id2), (h3, id3) = _host(1), _host(2), _host(3)
    k1, k2, c2, wrong = _key(h1), _key(h2), _key(h2), _key(h1)
    _write_config(vsa, hosts=[
        {"nqn": h1, "dhchap_secret": k1},
        {"nqn": h2, "dhchap_secret": k2, "dhchap_ctrl_secret": c2},
    ])
    vsa.start()
    assert f"subsystems/{NQN}/allowed_hosts/{h1}" in nvmet_objects()

    def as_host(nqn: str, hostid: str, extra: str) -> subprocess.CompletedProcess[str]:
        return connect(f"--hostnqn={nqn} --hostid={hostid} {extra}", check=False)

    # one-way: the right secret connects, a wrong one and none are refused
    assert as_host(h1, id1, f"--dhchap-secret={k1}").returncode == 0
    assert namespace(1)
    disconnect()
    assert as_host(h1, id1, f"--dhchap-secret={wrong}").returncode != 0
    assert as_host(h1, id1, "").returncode != 0
    # bidirectional: the host checks the controller too
    assert as_host(h2, id2, f"--dhchap-secret={k2} --dhchap-ctrl-secret={c2}").returncode == 0
    node = namespace(1)
    assert size_of(node) == 2 << 30
    disconnect()
    assert as_host(h2, id2, f"--dhchap-secret={k2} --dhchap-ctrl-secret={k1}").returncode != 0
    assert not namespaces()
    # a host not in the list is refused whatever it sends
    assert as_host(h3, id3, f"--dhchap-secret={k1}").returncode != 0
    assert not namespaces()


def test_kill9_then_teardown_removes_only_ours(vsa: kit.VsaDaemon) -> None:
    vsa.kill9()
    assert nvmet_objects() - FOREIGN
    assert vsa.teardown().returncode == 0
    assert nvmet_objects() == FOREIGN
    loopback = Path("/sys/kernel/config/target/loopback")
    assert not [d.name for d in loopback.iterdir() if d.name.startswith("naa.")]


def test_tls_refused_without_tlshd(vsa: kit.VsaDaemon) -> None:
    _write_config(vsa, tls=True)
    proc = subprocess.run(
        [sys.executable, "-m", "thur.vsa.daemon", "--config", str(vsa.config_path)],
        capture_output=True, text=True, timeout=300, check=False)
    print(proc.stderr)
    assert proc.returncode == 3
    assert "nvme.tls" in proc.stderr and "tlshd is not running" in proc.stderr
    assert nvmet_objects() == FOREIGN


TLSHD_CONF = """[authenticate]
keyrings=.nvme
[authenticate.client]
[authenticate.server]
"""


def test_tls_end_to_end_with_tlshd(vsa: kit.VsaDaemon, tmp_path: Path) -> None:
    # tlshd does the TLS handshakes of both ends (target and host share this machine's
    # .nvme keyring); the test owns it and stops it by its pid.
    Path("/etc/tlshd.conf").write_text(TLSHD_CONF)
    log = open(tmp_path / "tlshd.log", "wb")  # noqa: SIM115 - owned by the child
    tlshd = subprocess.Popen(["tlshd", "-s"], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        hostnqn, hostid = _host(4)
        kit.sh(f"nvme gen-tls-key --hostnqn={hostnqn} --subsysnqn={NQN} --insert")
        kit.sh("grep psk /proc/keys", check=False)
        _write_config(vsa, tls=True, hosts=[{"nqn": hostnqn}])
        vsa.start()
        port = next(p for p in (NVMET / "ports").iterdir() if p.name != "777")
        assert (port / "addr_tsas").read_text().strip() == "tls1.3"
        me = f"--hostnqn={hostnqn} --hostid={hostid}"
        assert connect(me, check=False).returncode != 0  # no TLS: refused
        assert not namespaces()
        connect(f"{me} --tls")
        node = namespace(1)
        data = os.urandom(BLOCK * 32)
        write_at(node, 512, data)
        assert read_at(node, 512, 32) == data
        disconnect()
        assert vsa.signal(signal.SIGTERM) == 0
        assert nvmet_objects() == FOREIGN
    finally:
        tlshd.terminate()
        tlshd.wait(30)
        print((tmp_path / "tlshd.log").read_text(errors="replace")[-3000:])

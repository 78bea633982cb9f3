"""Thur VSA over iSCSI through the real kernel: LIO + TCMU + open-iscsi + sd.

One thurvsad on a fresh data dir (under /var/tmp: /tmp is a small tmpfs in the VM),
one 2 GiB volume created with the CLI and logged in to over 127.0.0.1. The tests run
in file order on that one disk; the last kills the daemon with -9 and restarts it.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import kit

IQN = "iqn.2026-11.io.thur:vsae2e"
INSTANCE = "thurvsa"
MNT = Path("/mnt/thurvsa-e2e")
BLOCK = 4096
TREE = "/mnt/src/thur"  # a few hundred files of source: a real tree, quick under TCG


VsaDaemon = kit.VsaDaemon


@pytest.fixture(scope="module")
def vsa() -> Iterator[VsaDaemon]:
    kit.start_iscsid()
    kit.logout_all()
    data_dir = Path(tempfile.mkdtemp(prefix="thurvsa-e2e-", dir="/var/tmp"))
    config_path = data_dir.parent / f"{data_dir.name}.yaml"
    config = {
        "data_dir": str(data_dir),
        "admin_socket": str(data_dir / "admin.sock"),
        "iscsi": {"listen": ["127.0.0.1:3260"], "target_iqn": IQN},
        "instance": INSTANCE,
    }
    import yaml

    config_path.write_text(yaml.safe_dump(config))
    daemon = VsaDaemon(config_path, config, data_dir.parent / f"{data_dir.name}.log")
    try:
        yield daemon
    finally:
        kit.sh(f"umount {MNT}", check=False)
        kit.logout_all()
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.signal(signal.SIGTERM)
        subprocess.run(
            [sys.executable, "-m", "thur.vsa.daemon", "--config", str(config_path),
             "--teardown"],
            check=False,
            timeout=120,
        )
        if daemon.log_path.exists():
            print(f"--- {daemon.log_path.name} ---\n{daemon.log()}")
        shutil.rmtree(data_dir, ignore_errors=True)


def _disk() -> kit.ScsiDev:
    def ready() -> kit.ScsiDev | None:
        devs = [d for d in kit.our_devices() if d.kind == "disk" and d.node.startswith("/dev/sd")]
        return devs[0] if len(devs) == 1 else None

    dev = kit.wait_for("the THUR disk", ready, kit.DEVICE_TIMEOUT)
    kit.settle()
    return dev


@pytest.fixture(scope="module")
def disk(vsa: VsaDaemon) -> kit.ScsiDev:
    vsa.start()
    vsa.cli("volume create vol1 --size 2G")
    vsa.cli("volume list")
    vsa.cli("info")
    kit.discover()
    kit.login(IQN)
    dev = _disk()
    kit.sh("lsscsi -g")
    kit.sh(f"sg_readcap -l {dev.node}")
    return dev


def _tree_sums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _mount_copy(node: str) -> None:
    MNT.mkdir(parents=True, exist_ok=True)
    kit.sh(f"mount {node} {MNT}")
    kit.sh(f"cp -a {TREE} {MNT}/tree", timeout=600)


def test_disk_appears_with_vendor_thur(vsa: VsaDaemon, disk: kit.ScsiDev) -> None:
    assert disk.vendor == "THUR"
    size = int(kit.sh(f"blockdev --getsize64 {disk.node}").stdout.strip())
    assert size == 2 << 30
    assert int(kit.sh(f"blockdev --getss {disk.node}").stdout.strip()) == BLOCK
    listing = vsa.cli("volume list --json").stdout
    assert '"exported": true' in listing


def test_ext4_mkfs_copy_fsck(disk: kit.ScsiDev) -> None:
    kit.sh(f"mkfs.ext4 -F -q {disk.node}", timeout=600)
    _mount_copy(disk.node)
    assert _tree_sums(Path(TREE)) == _tree_sums(MNT / "tree")
    kit.sh(f"umount {MNT}", timeout=300)
    kit.sh(f"fsck.ext4 -f -n {disk.node}", timeout=600)


def test_xfs_mkfs_copy_repair(disk: kit.ScsiDev) -> None:
    kit.sh(f"mkfs.xfs -f -q {disk.node}", timeout=600)
    _mount_copy(disk.node)
    kit.sh(f"umount {MNT}", timeout=300)
    kit.sh(f"xfs_repair -n {disk.node}", timeout=600)


def test_fio_verify(disk: kit.ScsiDev) -> None:
    kit.sh(
        f"fio --name=v --filename={disk.node} --rw=randwrite --bsrange=4k-256k --size=256M "
        "--verify=crc32c --verify_state_save=0 --direct=1 --ioengine=libaio --iodepth=4",
        timeout=1500,
    )


def test_discard_then_lba_status_deallocated(disk: kit.ScsiDev) -> None:
    kit.sh(f"blkdiscard {disk.node}", timeout=600)
    out = kit.sh(f"sg_get_lba_status {disk.node}").stdout
    descriptors = [line for line in out.splitlines() if "descriptor" in line.lower()]
    assert "deallocated" in (descriptors[0] if descriptors else out).lower(), out
    for lba in (0, 1000, (1 << 30) // BLOCK):
        out = kit.sh(f"sg_get_lba_status --lba={lba} --maxlen=24 {disk.node}").stdout
        assert "deallocated" in out.lower(), out


def _read_block(node: str, lba: int) -> bytes:
    return subprocess.run(
        ["dd", f"if={node}", f"bs={BLOCK}", f"skip={lba}", "count=1", "iflag=direct",
         "status=none"], capture_output=True, check=True, timeout=60).stdout


def test_compare_and_write(disk: kit.ScsiDev, tmp_path: Path) -> None:
    lba = 100
    old, new, other = (bytes([b]) * BLOCK for b in (0xA5, 0x5A, 0x33))
    for name, data in (("old", old), ("new", new), ("other", other)):
        (tmp_path / name).write_bytes(data)
    kit.sh(f"dd if={tmp_path / 'old'} of={disk.node} bs={BLOCK} seek={lba} count=1 "
           "oflag=direct conv=notrunc status=none")
    assert _read_block(disk.node, lba) == old

    def caw(compare: str, write: str) -> subprocess.CompletedProcess[str]:
        return kit.sh(f"sg_compare_and_write --inc={tmp_path / compare} "
                      f"--inw={tmp_path / write} --lba={lba} --num=1 --xferlen={2 * BLOCK} "
                      f"{disk.node}", check=False)

    ok = caw("old", "new")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert _read_block(disk.node, lba) == new
    # The medium now holds `new`: comparing against `old` miscompares, writes nothing.
    bad = caw("old", "other")
    assert bad.returncode == 14, f"expected exit 14 (miscompare), got {bad.returncode}"
    assert _read_block(disk.node, lba) == new


def _thur_disks() -> list[kit.ScsiDev]:
    return [d for d in kit.our_devices() if d.kind == "disk" and d.node.startswith("/dev/sd")]


def test_resize_grows_the_disk(vsa: VsaDaemon, disk: kit.ScsiDev) -> None:
    vsa.cli("volume resize vol1 --size 3G")
    name = disk.node.removeprefix("/dev/")
    kit.sh(f"echo 1 > /sys/block/{name}/device/rescan")
    kit.wait_for(
        "the disk to show 3 GiB",
        lambda: kit.sh(f"blockdev --getsize64 {disk.node}").stdout.strip() == str(3 << 30),
        60,
    )
    assert '"size": 3221225472' in vsa.cli("volume info vol1 --json").stdout


def test_create_at_runtime_and_delete_refused_in_use(vsa: VsaDaemon, disk: kit.ScsiDev) -> None:
    vsa.cli("volume create vol2 --size 1G --lun 5")
    kit.sh("iscsiadm -m session --rescan", timeout=120)
    kit.settle()
    two = kit.wait_for("a second THUR disk", lambda: len(_thur_disks()) == 2 and _thur_disks(),
                       kit.DEVICE_TIMEOUT)
    second = next(d for d in two if d.node != disk.node)
    assert second.hctl.endswith(":5")
    assert int(kit.sh(f"blockdev --getsize64 {second.node}").stdout.strip()) == 1 << 30
    refused = vsa.cli("volume delete vol2", check=False)
    assert refused.returncode == 1 and "in use" in refused.stderr
    vsa.cli("volume delete vol2 --force")
    kit.sh(f"echo 1 > /sys/class/scsi_device/{second.hctl}/device/delete")
    kit.settle()
    assert [d.node for d in _thur_disks()] == [disk.node]
    assert "vol2" not in vsa.cli("volume list").stdout
    # The remaining disk still serves (after LIO's REPORTED LUNS DATA HAS CHANGED).
    kit.wait_for("vol1 to answer", lambda: kit.sh(f"sg_readcap -l {disk.node}",
                                                  check=False).returncode == 0, 60)


def test_kill9_after_sync_restart_fsck_clean(vsa: VsaDaemon, disk: kit.ScsiDev) -> None:
    # No lazy init: ext4lazyinit's WRITE ZEROES would otherwise be caught in the gap.
    kit.sh(f"mkfs.ext4 -F -q -E lazy_itable_init=0,lazy_journal_init=0 {disk.node}",
           timeout=600)
    name = disk.node.removeprefix("/dev/")
    kit.sh(f"cat /sys/block/{name}/queue/write_cache /sys/block/{name}/queue/fua")
    _mount_copy(disk.node)
    before = _tree_sums(MNT / "tree")
    assert before
    sessions = kit.session_ids()
    # sync(1) ends with the block device's own dirty pages written after its last cache
    # flush: acknowledged, not fenced. The volume's journal must keep them across kill -9.
    kit.sh("sync", timeout=300)
    vsa.kill9()
    assert kit.kernel_objects(IQN, INSTANCE)
    vsa.start()
    assert kit.session_ids() == sessions
    kit.sh("echo 3 > /proc/sys/vm/drop_caches")
    kit.wait_for(
        "the disk to answer after the reattach",
        lambda: kit.sh(f"sg_readcap {disk.node}", check=False).returncode == 0,
        120,
    )
    kit.sh(f"ls -la {MNT} {MNT}/tree | head -20", check=False)
    diff = kit.sh(f"diff -r {TREE} {MNT}/tree", check=False, timeout=600)
    kit.sh("dmesg | tail -40", check=False)
    assert diff.returncode == 0
    assert _tree_sums(MNT / "tree") == before
    kit.sh(f"umount {MNT}", timeout=300)
    kit.sh(f"fsck.ext4 -f -n {disk.node}", timeout=600)
    assert kit.session_ids() == sessions
    # A clean stop removes exactly our kernel objects.
    kit.logout_all()
    assert vsa.signal(signal.SIGTERM) == 0
    assert kit.kernel_objects(IQN, INSTANCE) == []

"""The tape drives through the real kernel: st/mt-st, tar, dd and sg3-utils over iSCSI.

One library (thurvtld + an iSCSI session) serves the whole module; each test creates its
own cartridges with `thurvtl cartridge create`, loads them with `mtx load` and leaves the
drives empty again (the `empty_drives` fixture unloads whatever a failed test left).

Positions are checked from both ends after every step: `mt-st tell` is the drive's own
READ POSITION (the logical object number: records and filemarks both count), `mt-st
status` is what st derived from the drive's answers (file number, block number within
the file, partition; -1 where st cannot know, e.g. after a seek or a backward space).

st behaviours these tests rely on (Linux st, BSD semantics, the default):
- closing a non-rewinding device after writing writes one filemark;
- closing after reading leaves the position where the reads stopped;
- SPACE that meets a filemark (fsr into a filemark, bsr into one) fails with EIO and the
  position is past that filemark in the direction of motion;
- the first READ at end of data right after a filemark returns 0 bytes, every following
  one fails with EIO (the drive says BLANK CHECK both times).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import kit

IQN = "iqn.2026-11.io.thur:e2e"
LIBRARY = {"num_slots": 16, "num_mail_slots": 2, "num_drives": 2}
KiB = 1024
MiB = 1024 * 1024

STATUS_RE = re.compile(r"File number=(-?\d+), block number=(-?\d+), partition=(\d+)\.")
TELL_RE = re.compile(r"At block (\d+)\.")
BLOCK_SIZE_RE = re.compile(r"Tape block size (\d+) bytes\. Density code (0x[0-9a-f]+)")


# --- the shared library ------------------------------------------------------------------


@dataclass
class Library:
    daemon: kit.Daemon
    devs: list[kit.ScsiDev]
    work: Path  # scratch space for trees and data files

    @property
    def changer_sg(self) -> str:
        return next(d.sg for d in self.devs if d.kind == "mediumx")

    def drive(self, index: int) -> kit.ScsiDev:
        """Drive `index` (mtx's Data Transfer Element) is LUN index + 1."""
        return next(
            d for d in self.devs if d.kind == "tape" and d.hctl.split(":")[-1] == str(index + 1)
        )

    def nst(self, index: int) -> str:
        return self.drive(index).node.replace("/dev/st", "/dev/nst")

    def sg(self, index: int) -> str:
        return self.drive(index).sg

    def create(self, barcode: str) -> int:
        """A blank cartridge in the first empty slot; returns the slot number."""
        self.daemon.cli(f"cartridge create {barcode}")
        info = json.loads(self.daemon.cli(f"cartridge info {barcode} --json").stdout)
        return int(info["location"]["number"])

    def load(self, barcode: str, drive: int) -> str:
        """Create `barcode`, `mtx load` it into `drive`; returns the drive's /dev/nstN."""
        slot = self.create(barcode)
        load = f"mtx -f {self.changer_sg} load {slot} {drive}"
        if kit.sh(load, check=False).returncode != 0:
            # After a restart the changer's first command meets the reset unit attention.
            kit.sh(f"mtx -f {self.changer_sg} status", check=False)
            kit.sh(load)
        node = self.nst(drive)
        wait_online(node)
        return node

    def pool_chunks(self) -> int:
        """Chunk files in the pool (thur/pool/layout.py: chunks/ab/cd/<64 hex>)."""
        root = Path(self.daemon.config["data_dir"]) / "pool" / "chunks"
        return sum(1 for p in root.glob("*/*/*") if len(p.name) == 64)


def _attached() -> list[kit.ScsiDev]:
    def ready() -> list[kit.ScsiDev] | None:
        devs = kit.our_devices()
        kinds = sorted(d.kind for d in devs)
        if kinds == ["mediumx", "tape", "tape"] and all(d.node != "-" for d in devs):
            return devs
        return None

    return kit.wait_for("1 changer and 2 drives", ready, kit.DEVICE_TIMEOUT)


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    tmp = tmp_path_factory.mktemp("tapelib")
    data_dir = tmp / "data"
    data_dir.mkdir()
    work = tmp / "work"
    work.mkdir()
    config_path = tmp / "thurvtl.yaml"
    config = kit.write_config(config_path, data_dir, library=LIBRARY)
    daemon = kit.Daemon(config_path, config, tmp / "thurvtld.log")
    kit.start_iscsid()
    kit.logout_all()
    try:
        daemon.start()
        kit.discover()
        kit.login(IQN)
        yield Library(daemon, _attached(), work)
    finally:
        kit.stop_and_teardown(daemon)


@pytest.fixture(autouse=True)
def empty_drives(lib: Library) -> Iterator[None]:
    """Every test starts and ends with both drives empty and in variable-block mode, and
    the daemon logged no error meanwhile (background replication included)."""
    start = lib.daemon.log_path.stat().st_size
    yield
    kit.sh("dmesg | tail -n 30", check=False)
    with open(lib.daemon.log_path, "rb") as f:
        f.seek(start)
        logged = f.read().decode(errors="replace")
    errors = [line for line in logged.splitlines() if " ERROR " in line or "Traceback" in line]
    elements = json.loads(lib.daemon.cli("changer inventory --json").stdout)["elements"]
    free = [e["number"] for e in elements if e["type"] == "slot" and not e["full"]]
    for element in elements:
        if element["type"] == "drive" and element["full"]:
            node = lib.nst(element["number"])
            kit.sh(f"mt-st -f {node} stclearoptions can-partitions", check=False)
            kit.sh(f"mt-st -f {node} setblk 0", check=False)
            # Its home slot may hold a newer cartridge (`create` takes the first free one).
            lib.daemon.cli(f"changer unload {element['number']} {free.pop(0)}")
    assert not errors, "thurvtld logged errors:\n" + "\n".join(errors)


# --- mt-st -------------------------------------------------------------------------------


def wait_online(node: str) -> None:
    # The first open after a load meets UNIT ATTENTION 28/00 (st retries it), and udev
    # may hold the node for a moment after the media change (EBUSY): retry, bounded.
    def online() -> bool:
        proc = kit.sh(f"mt-st -f {node} status", check=False)
        return proc.returncode == 0 and "ONLINE" in proc.stdout

    kit.wait_for(f"{node} online", online, 90)


def mt(node: str, op: str, *, fails: bool = False) -> None:
    proc = kit.sh(f"mt-st -f {node} {op}", check=False)
    if fails:
        assert proc.returncode != 0, f"`mt-st {op}` should have failed"
        assert "Input/output error" in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 0, f"`mt-st {op}` failed: {proc.stderr}"


def tell(node: str) -> int:
    m = TELL_RE.search(kit.sh(f"mt-st -f {node} tell").stdout)
    assert m, "no block number in `mt-st tell`"
    return int(m.group(1))


@dataclass(frozen=True)
class Status:
    file: int
    block: int
    partition: int
    block_size: int
    density: str
    flags: frozenset[str]


def status(node: str) -> Status:
    out = kit.sh(f"mt-st -f {node} status").stdout
    m, b = STATUS_RE.search(out), BLOCK_SIZE_RE.search(out)
    assert m and b, f"cannot parse `mt-st status`:\n{out}"
    flags = out.strip().splitlines()[-1].split()
    return Status(int(m.group(1)), int(m.group(2)), int(m.group(3)), int(b.group(1)),
                  b.group(2), frozenset(flags))


def at(node: str, *, file: int, block: int, partition: int = 0, obj: int) -> Status:
    """Assert st's view (file, block, partition) and the drive's (`tell` = object number)."""
    st = status(node)
    assert (st.file, st.block, st.partition) == (file, block, partition), st
    assert tell(node) == obj
    assert "ONLINE" in st.flags
    return st


# --- data --------------------------------------------------------------------------------


def payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def dd_write(node: str, src: Path, bs: int) -> None:
    kit.sh(f"dd if={src} of={node} bs={bs} status=none")


def dd_read(node: str, dst: Path, bs: int, count: int | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    n = f" count={count}" if count is not None else ""
    return kit.sh(f"dd if={node} of={dst} bs={bs}{n}", check=check)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


WORDS = ("tape", "filemark", "record", "block", "partition", "cartridge", "library", "drive",
         "changer", "pool", "chunk", "dedup", "stream", "index", "barcode", "density")
MTIME = 1_700_000_000


def make_tree(root: Path, seed: int, scale: int = 1) -> Path:
    """A deterministic tree of mixed files: text, random binaries, a couple of larger
    files, nested and empty directories, an empty file, a symlink, odd names. About
    `scale` x 4 MB. Every mtime is fixed, so the same tree always tars identically."""
    rnd = random.Random(seed)
    for d in ("docs", "bin", "data/a/b", "data/c", "empty dir"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(30 * scale):
        lines = (" ".join(rnd.choices(WORDS, k=rnd.randrange(3, 14)))
                 for _ in range(rnd.randrange(5, 300)))
        (root / "docs" / f"note-{i:03d}.txt").write_text(f"{seed}:{i}\n" + "\n".join(lines))
    for i in range(12 * scale):
        sub = ("bin", "data/a", "data/a/b", "data/c")[i % 4]
        (root / sub / f"blob{i:02d}.bin").write_bytes(rnd.randbytes(rnd.randrange(1, 200 * KiB)))
    for i in range(scale):
        (root / f"big-{i}.img").write_bytes(rnd.randbytes(1536 * KiB))
        # half random, half a repeated pattern (compressible, and not all-unique data)
        (root / "data" / f"mixed-{i}.dat").write_bytes(
            rnd.randbytes(512 * KiB) + bytes(range(256)) * (2 * KiB))
    (root / "docs" / "empty.txt").write_bytes(b"")
    (root / "docs" / "name with spaces & (parens).txt").write_text("odd name\n")
    (root / "link-to-big").symlink_to("big-0.img")
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    return root


def tree_listing(root: Path) -> set[str]:
    """Names as `tar -C root -cf - .` lists them (directories with a trailing /)."""
    names = {"./"}
    for p in root.rglob("*"):
        rel = "./" + p.relative_to(root).as_posix()
        names.add(rel + "/" if p.is_dir() and not p.is_symlink() else rel)
    return names


# --- tests -------------------------------------------------------------------------------


def test_mt_st_positioning_variable_and_fixed(lib: Library) -> None:
    node = lib.load("MTS001L8", 0)
    st = at(node, file=0, block=0, obj=0)
    assert "BOT" in st.flags and st.block_size == 0 and st.density == "0x5e"
    mt(node, "rewind")
    at(node, file=0, block=0, obj=0)

    # Three files: 3 records of 10000 bytes, 2 of 20000, 1 of 30000 (each dd's close
    # writes the filemark), then `weof` adds an empty fourth file. Objects:
    # 0 1 2 rec | 3 FM | 4 5 rec | 6 FM | 7 rec | 8 FM | 9 FM | end of data at 10.
    sizes = (10000, 20000, 30000)
    datas = [payload(n, 30000 + 10000 * (n == 1)) for n in range(3)]
    recs = [d[i : i + s] for d, s in zip(datas, sizes, strict=True)
            for i in range(0, len(d), s)]
    for n, (data, size) in enumerate(zip(datas, sizes, strict=True)):
        dd_write(node, write_file(lib.work / f"file{n}", data), size)
        at(node, file=n + 1, block=0, obj=(4, 7, 9)[n])
    mt(node, "weof")
    assert "EOF" in at(node, file=4, block=0, obj=10).flags
    mt(node, "rewind")
    assert "BOT" in at(node, file=0, block=0, obj=0).flags

    # fsf / bsf: backward spacing stops on the beginning-of-tape side of the filemark,
    # where st no longer knows the block number.
    mt(node, "fsf 2")
    at(node, file=2, block=0, obj=7)
    out = lib.work / "out"
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == recs[5]
    at(node, file=2, block=1, obj=8)
    mt(node, "bsf 1")
    at(node, file=1, block=-1, obj=6)
    mt(node, "fsf 1")
    at(node, file=2, block=0, obj=7)
    mt(node, "bsf 2")
    at(node, file=0, block=-1, obj=3)
    mt(node, "bsr 1")
    at(node, file=0, block=-1, obj=2)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == recs[2]
    assert tell(node) == 3

    # fsr / bsr, and spacing into a filemark or past the beginning fails (EIO) with the
    # position just past that filemark.
    mt(node, "rewind")
    mt(node, "fsr 2")
    at(node, file=0, block=2, obj=2)
    mt(node, "bsr 1")
    at(node, file=0, block=1, obj=1)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == recs[1]
    at(node, file=0, block=2, obj=2)
    mt(node, "fsr 2", fails=True)  # record 2, then the filemark at 3
    at(node, file=1, block=0, obj=4)
    mt(node, "bsr 1", fails=True)  # straight into the filemark at 3
    at(node, file=0, block=-1, obj=3)
    mt(node, "rewind")
    mt(node, "bsr 1", fails=True)  # beginning of partition
    at(node, file=0, block=0, obj=0)

    # eod: st counts the filemarks it spaced over; nothing moves past end of data.
    mt(node, "eod")
    assert "EOD" in at(node, file=4, block=-1, obj=10).flags
    mt(node, "fsf 1", fails=True)
    mt(node, "fsr 1", fails=True)
    assert tell(node) == 10

    # seek / tell: logical object numbers, records and filemarks alike.
    mt(node, "seek 4")
    at(node, file=-1, block=-1, obj=4)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == recs[3]
    assert tell(node) == 5
    mt(node, "seek 0")
    assert "BOT" in at(node, file=0, block=0, obj=0).flags
    mt(node, "seek 8")
    dd_read(node, out, 64 * KiB, 1)  # the filemark: 0 bytes, position past it
    assert out.read_bytes() == b""
    assert tell(node) == 9

    # erase at object 7: the third file and both filemarks after it are gone.
    mt(node, "seek 7")
    mt(node, "erase")
    assert tell(node) == 7
    mt(node, "rewind")
    mt(node, "eod")
    at(node, file=2, block=-1, obj=7)
    mt(node, "rewind")
    mt(node, "fsf 3", fails=True)
    assert tell(node) == 7

    # Fixed-block mode: setblk 65536, ten 64 KiB blocks appended at end of data.
    mt(node, "rewind")
    mt(node, "setblk 65536")
    st = at(node, file=0, block=0, obj=0)
    assert st.block_size == 65536
    mt(node, "eod")
    fixed = write_file(lib.work / "fixed", payload(7, 10 * 64 * KiB))
    dd_write(node, fixed, 64 * KiB)
    at(node, file=3, block=0, obj=18)
    mt(node, "rewind")
    mt(node, "fsf 2")
    mt(node, "fsr 3")
    at(node, file=2, block=3, obj=10)
    mt(node, "bsr 1")
    at(node, file=2, block=2, obj=9)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == fixed.read_bytes()[2 * 64 * KiB : 3 * 64 * KiB]
    at(node, file=2, block=3, obj=10)
    mt(node, "rewind")
    mt(node, "fsf 2")
    dd_read(node, out, 128 * KiB)  # two blocks per read, up to the filemark
    assert out.read_bytes() == fixed.read_bytes()
    at(node, file=3, block=0, obj=18)

    # Back to variable mode: a fixed block is a 64 KiB record like any other.
    mt(node, "setblk 0")
    mt(node, "rewind")
    assert status(node).block_size == 0
    mt(node, "fsf 2")
    dd_read(node, out, 256 * KiB, 1)
    assert out.read_bytes() == fixed.read_bytes()[: 64 * KiB]
    mt(node, "rewind")
    dd_read(node, out, 64 * KiB)  # the whole first file, record by record
    assert out.read_bytes() == datas[0]
    at(node, file=1, block=0, obj=4)


def partition_capacities(sg: str) -> dict[int, int]:
    """Native capacity per partition (MB) from the volume statistics log page (17h)."""
    out = kit.sh(f"sg_logs -p 0x17 {sg}").stdout
    section = out.split("Native capacity partitions:", 1)[1].split("Used native", 1)[0]
    return {int(p): int(mb) for p, mb in re.findall(
        r"partition number: (\d+), partition record data counter \[MB\]: (\d+)", section)}


def test_mt_st_partitions(lib: Library) -> None:
    node, sg = lib.load("MTP001L8", 0), lib.sg(0)
    mt(node, "stsetoptions can-partitions")  # st refuses partition ioctls without it
    assert partition_capacities(sg) == {0: 12_000_000}

    # Partition 1 of 1000 MB (st sends it in GB units: our page says PSUM=11b).
    mt(node, "mkpartition 1000")
    at(node, file=0, block=0, partition=0, obj=0)
    assert partition_capacities(sg) == {0: 11_999_000, 1: 1000}
    p0 = write_file(lib.work / "p0", payload(11, 16000))
    dd_write(node, p0, 8000)
    at(node, file=1, block=0, partition=0, obj=3)
    mt(node, "setpartition 1")
    at(node, file=0, block=0, partition=1, obj=0)
    p1 = write_file(lib.work / "p1", payload(12, 5000))
    dd_write(node, p1, 5000)
    at(node, file=1, block=0, partition=1, obj=2)

    # partseek PARTITION BLOCK: LOCATE with the change-partition bit.
    out = lib.work / "out"
    mt(node, "partseek 0 1")
    at(node, file=-1, block=-1, partition=0, obj=1)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == p0.read_bytes()[8000:]
    mt(node, "partseek 1 0")
    at(node, file=0, block=0, partition=1, obj=0)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == p1.read_bytes()
    at(node, file=0, block=1, partition=1, obj=1)
    mt(node, "eod")
    at(node, file=1, block=-1, partition=1, obj=2)
    mt(node, "setpartition 0")
    assert status(node).partition == 0
    mt(node, "rewind")  # REWIND goes to the beginning of partition 0
    at(node, file=0, block=0, partition=0, obj=0)
    dd_read(node, out, 64 * KiB)
    assert out.read_bytes() == p0.read_bytes()

    # mkpartition 1: two partitions the drive sizes itself (halves); a fresh layout.
    mt(node, "rewind")
    mt(node, "mkpartition 1")
    at(node, file=0, block=0, partition=0, obj=0)
    assert partition_capacities(sg) == {0: 6_000_000, 1: 6_000_000}
    mt(node, "eod")
    assert tell(node) == 0
    mt(node, "partseek 1 0")
    mt(node, "eod")
    at(node, file=0, block=-1, partition=1, obj=0)

    # mkpartition 0: back to one partition; partition 1 no longer exists.
    mt(node, "setpartition 0")
    mt(node, "rewind")
    mt(node, "mkpartition 0")
    at(node, file=0, block=0, partition=0, obj=0)
    assert partition_capacities(sg) == {0: 12_000_000}
    proc = kit.sh(f"mt-st -f {node} setpartition 1", check=False)
    assert proc.returncode != 0 and "Invalid argument" in proc.stderr
    mt(node, "stclearoptions can-partitions")


def test_variable_records_filemark_and_eod(lib: Library) -> None:
    node, sg = lib.load("VAR001L8", 0), lib.sg(0)
    record = write_file(lib.work / "r64k", payload(40, 64 * KiB))
    kit.sh(f"dd if={record} of={node} bs=64k count=1")  # close: one filemark
    at(node, file=1, block=0, obj=2)
    mt(node, "weof")
    at(node, file=2, block=0, obj=3)
    mt(node, "rewind")

    out = lib.work / "out"
    proc = dd_read(node, out, 256 * KiB, 1)
    assert out.read_bytes() == record.read_bytes()  # exactly 65536 bytes
    assert "0+1 records in" in proc.stderr
    at(node, file=0, block=1, obj=1)
    for n in (1, 2):  # the filemark from dd's close, then the one from weof
        dd_read(node, out, 256 * KiB, 1)
        assert out.stat().st_size == 0
        at(node, file=n, block=0, obj=n + 1)

    # End of data: st returns 0 once for the first BLANK CHECK after a filemark, then
    # EIO for every further read; never data, and the position stays.
    first = dd_read(node, out, 256 * KiB, 1)
    assert out.stat().st_size == 0 and "0+0 records in" in first.stderr
    for _ in range(2):
        again = dd_read(node, out, 256 * KiB, 1, check=False)
        assert again.returncode != 0 and "Input/output error" in again.stderr
        assert out.stat().st_size == 0
    assert tell(node) == 3
    # The drive itself says BLANK CHECK / END-OF-DATA DETECTED to a raw READ(6).
    raw = kit.sh(f"sg_raw -r 256k {sg} 08 00 04 00 00 00", check=False)
    assert raw.returncode != 0
    assert "blank check" in (raw.stdout + raw.stderr).lower()
    assert "end-of-data detected" in (raw.stdout + raw.stderr).lower()

    # A record longer than the read: st refuses with ENOMEM, the record is passed over.
    mt(node, "rewind")
    proc = dd_read(node, out, 32 * KiB, 1, check=False)
    assert proc.returncode != 0 and "Cannot allocate memory" in proc.stderr
    assert tell(node) == 1
    # A record shorter than the read comes back whole (ILI, short transfer).
    mt(node, "rewind")
    dd_read(node, out, 1024 * KiB, 1)
    assert out.stat().st_size == 64 * KiB


def tar_size(tree: Path, blocking: int) -> int:
    out = kit.sh(f"tar -b {blocking} -cf - -C {tree} . | wc -c").stdout
    return int(out.split()[-1])


def test_tar_two_archives_blocking_128_and_2048(lib: Library) -> None:
    tree1 = make_tree(lib.work / "tree1", seed=1)
    tree2 = make_tree(lib.work / "tree2", seed=2)
    kit.sh(f"du -sh {tree1} {tree2}")
    records1 = tar_size(tree1, 128) // (128 * 512)
    records2 = tar_size(tree2, 2048) // (2048 * 512)
    node = lib.load("TAR001L8", 0)

    kit.sh(f"tar -b 128 -cf {node} -C {tree1} .")
    at(node, file=1, block=0, obj=records1 + 1)
    mt(node, "rewind")
    mt(node, "eod")  # append after end of data
    at(node, file=1, block=-1, obj=records1 + 1)
    kit.sh(f"tar -b 2048 -cf {node} -C {tree2} .")
    at(node, file=2, block=0, obj=records1 + records2 + 2)

    # List both, then extract both; `fsf 1` skips from the first to the second.
    mt(node, "rewind")
    listed1 = set(kit.sh(f"tar -b 128 -tf {node}").stdout.split("\n")) - {""}
    assert listed1 == tree_listing(tree1)
    mt(node, "fsf 1")
    at(node, file=1, block=0, obj=records1 + 1)
    listed2 = set(kit.sh(f"tar -b 2048 -tf {node}").stdout.split("\n")) - {""}
    assert listed2 == tree_listing(tree2)

    mt(node, "rewind")
    out1, out2 = lib.work / "out1", lib.work / "out2"
    out1.mkdir()
    out2.mkdir()
    kit.sh(f"tar -b 128 -xf {node} -C {out1}")
    mt(node, "fsf 1")
    kit.sh(f"tar -b 2048 -xf {node} -C {out2}")
    kit.sh(f"diff -r --no-dereference {tree1} {out1}")
    kit.sh(f"diff -r --no-dereference {tree2} {out2}")
    mt(node, "rewind")
    mt(node, "eod")
    at(node, file=2, block=-1, obj=records1 + records2 + 2)


def log_params(sg: str, page: int) -> dict[int, bytes]:
    """A log page's parameters, from `sg_logs -r` (the raw page)."""
    # LOG SENSE, PC=01b (cumulative values), 4 KiB allocation; -b: data-in to stdout.
    raw = raw_out(["sg_raw", "-b", "-r", "4096", sg, "4d", "00", f"{0x40 | page:02x}",
                   "00", "00", "00", "00", "10", "00", "00"])
    assert raw[0] & 0x3F == page
    end = 4 + int.from_bytes(raw[2:4], "big")
    params, off = {}, 4
    while off < end:
        code, length = int.from_bytes(raw[off : off + 2], "big"), raw[off + 3]
        params[code] = raw[off + 4 : off + 4 + length]
        off += 4 + length
    return params


def raw_out(argv: list[str]) -> bytes:
    """stdout of a command that writes binary (sg3-utils' -r)."""
    print(f"$ {' '.join(argv)}", flush=True)
    return subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout


def opcodes(sg: str) -> set[int]:
    out = kit.sh(f"sg_opcodes {sg}").stdout
    return {int(m.group(1), 16) for m in re.finditer(r"^ ([0-9a-f]{2}) ", out, re.M)}


SSC_OPCODES = {0x00, 0x01, 0x03, 0x04, 0x05, 0x08, 0x0A, 0x0B, 0x10, 0x11, 0x12, 0x13, 0x15,
               0x19, 0x1A, 0x1B, 0x1E, 0x2B, 0x34, 0x44, 0x4C, 0x4D, 0x55, 0x5A, 0x80, 0x82,
               0x8C, 0x8D, 0x91, 0x92, 0xA2, 0xA3, 0xB5}
SMC_OPCODES = {0x00, 0x03, 0x07, 0x12, 0x15, 0x1A, 0x1E, 0x2B, 0x37, 0x4C, 0x4D, 0x55, 0x5A,
               0xA3, 0xA5, 0xA6, 0xB8}


def test_sg3_utils_on_drive_and_changer(lib: Library) -> None:
    info = json.loads(lib.daemon.cli("library info --json").stdout)
    serial0 = next(d["serial"] for d in info["drives"] if d["index"] == 0)
    node, sg, ch = lib.load("SGU001L8", 0), lib.sg(0), lib.changer_sg
    written_before = int.from_bytes(log_params(sg, 0x0C)[0x0000], "big")
    data = write_file(lib.work / "4m", payload(50, 4 * MiB))
    dd_write(node, data, 1 * MiB)

    # INQUIRY and VPD.
    out = kit.sh(f"sg_inq {sg}").stdout
    assert "Vendor identification: THUR" in out
    assert "Product identification: Ultrium 8-SCSI" in out
    assert "Peripheral device type: tape" in out and "RMB=1" in out
    out = kit.sh(f"sg_inq {ch}").stdout
    assert "Peripheral device type: medium changer" in out
    assert "Product identification: VTL" in out
    pages = raw_out(["sg_vpd", "--page=0x00", "-r", sg])
    assert {0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2} <= set(pages[4 : 4 + pages[3]]), pages
    assert f"Product serial number: {serial0}" in kit.sh(f"sg_vpd -p 0x80 {sg}").stdout
    ids = kit.sh(f"sg_vpd -p 0x83 {sg}").stdout
    assert "designator type: NAA" in ids and serial0 in ids
    naa_drive = re.search(r"0x6[0-9a-f]{31}", ids)
    b0 = raw_out(["sg_vpd", "--page=0xb0", "-r", sg])
    assert b0[:2] == b"\x01\xb0" and b0[4] & 0x01, f"VPD B0h: no WORM bit: {b0.hex()}"
    assert "Manufacturer-assigned serial number: " + serial0 in kit.sh(
        f"sg_vpd -p 0xb1 {sg}").stdout
    assert "Product serial number: " + info["chassis_serial"] in kit.sh(
        f"sg_vpd -p 0x80 {ch}").stdout
    ids_ch = kit.sh(f"sg_vpd -p 0x83 {ch}").stdout
    naa_ch = re.search(r"0x6[0-9a-f]{31}", ids_ch)
    assert naa_drive and naa_ch and naa_drive.group(0) != naa_ch.group(0)

    # LOG SENSE.
    out = kit.sh(f"sg_logs -a {sg}").stdout
    for name in ("Sequential access device", "Volume statistics", "Tape alert",
                 "Data compression"):
        assert name in out, name
    seq = log_params(sg, 0x0C)
    assert int.from_bytes(seq[0x0000], "big") - written_before == 4 * MiB
    assert int.from_bytes(seq[0x0004], "big") == 4 * MiB // 1_000_000  # BOP to EOD, MB
    out = kit.sh(f"sg_logs -p 0x0c {sg}").stdout
    assert "Native capacity from BOP to EOD: 4 MB" in out
    out = kit.sh(f"sg_logs -p 0x17 {sg}").stdout
    assert "Volume barcode: SGU001L8" in out
    assert "Total native capacity: 12000000 megabytes" in out
    assert "Total used native capacity: 4 megabytes" in out
    alerts = kit.sh(f"sg_logs -p 0x2e {sg}").stdout
    assert "Write protect: 0" in alerts and not re.search(r": [1-9]\d*$", alerts, re.M)
    out = kit.sh(f"sg_logs -a {ch}").stdout
    assert "0x2e" in out

    # MODE SENSE.
    out = kit.sh(f"sg_modes -a {sg}").stdout
    assert "Density code=0x5e" in out
    for name in ("Data Compression", "Device configuration", "Medium Partition",
                 "Informational exceptions"):
        assert f">> {name}" in out, name
    out = kit.sh(f"sg_modes -a {ch}").stdout
    for name in ("Element address assignment", "Transport geometry parameters",
                 "Device capabilities"):
        assert f">> {name}" in out, name

    # READ / WRITE ATTRIBUTE (MAM); the host attribute 0806h stays with the cartridge.
    out = kit.sh(f"sg_read_attr {sg}").stdout
    assert re.search(r"Volume identifier: SGU001L8\s*$", out, re.M)
    assert re.search(r"Medium serial number: SGU001L8\s*$", out, re.M)
    assert "Format density code: 0x5e" in out
    assert "Total MiB written in current/last load: 4" in out
    assert "Barcode" in kit.sh(f"sg_read_attr -s 5 {sg}").stdout
    kit.sh(f"sg_write_attr {sg} 0x0806=SGU001L8")
    barcode = kit.sh(f"sg_read_attr -f 0x0806 {sg}").stdout
    assert re.search(r"Barcode: SGU001L8\s*$", barcode, re.M)
    lib.daemon.cli("changer unload 0")
    slot = json.loads(lib.daemon.cli("cartridge info SGU001L8 --json").stdout)
    kit.sh(f"mtx -f {ch} load {slot['location']['number']} 0")
    wait_online(node)
    barcode = kit.sh(f"sg_read_attr -f 0x0806 {sg}").stdout
    assert re.search(r"Barcode: SGU001L8\s*$", barcode, re.M)
    # The changer answers READ ATTRIBUTE per element (SMC-3): the barcode of the
    # cartridge in that element; the robot element holds none.
    kit.sh(f"sg_read_attr {ch}")
    address = slot["location"]["address"]
    lib.daemon.cli("changer unload 0")
    on_changer = kit.sh(f"sg_read_attr -E {address} -f 0x0806 {ch}").stdout
    assert re.search(r"Barcode: SGU001L8\s*$", on_changer, re.M)
    kit.sh(f"mtx -f {ch} load {slot['location']['number']} 0")
    wait_online(node)

    # REPORT SUPPORTED OPERATION CODES: all-commands and one-command forms.
    missing = SSC_OPCODES - opcodes(sg)
    assert not missing, f"drive does not list {sorted(hex(o) for o in missing)}"
    missing = SMC_OPCODES - opcodes(ch)
    assert not missing, f"changer does not list {sorted(hex(o) for o in missing)}"
    kit.sh(f"sg_opcodes -o 0x34 {sg}")  # READ POSITION
    kit.sh(f"sg_opcodes -o 0xb8 {ch}")  # READ ELEMENT STATUS


def test_same_tree_on_two_cartridges_dedups(lib: Library) -> None:
    tree = make_tree(lib.work / "dup", seed=7, scale=3)
    kit.sh(f"du -sh {tree}")
    node0 = lib.load("DUP001L8", 0)
    node1 = lib.load("DUP002L8", 1)
    before = lib.pool_chunks()
    kit.sh(f"tar -b 128 -cf {node0} -C {tree} .")  # the close's filemark: durable
    first = lib.pool_chunks() - before
    kit.sh(f"tar -b 128 -cf {node1} -C {tree} .")
    second = lib.pool_chunks() - before - first
    print(f"new chunks: first cartridge {first}, second {second}", flush=True)
    assert first >= 6, "the tree should span several chunks"
    assert second <= 0.05 * first
    used = [json.loads(lib.daemon.cli(f"cartridge info {bc} --json").stdout)["used_bytes"]
            for bc in ("DUP001L8", "DUP002L8")]
    assert used[0] == used[1] >= tar_size(tree, 128)
    # The deduplicated copy reads back whole.
    mt(node1, "rewind")
    restored = lib.work / "dup-out"
    restored.mkdir()
    kit.sh(f"tar -b 128 -xf {node1} -C {restored}")
    kit.sh(f"diff -r --no-dereference {tree} {restored}")


def test_two_drives_concurrent_then_kill9_reads_back(lib: Library) -> None:
    nodes = [lib.load("KIL101L8", 0), lib.load("KIL102L8", 1)]
    sources = [write_file(lib.work / "k0", payload(71, 6 * MiB)),
               write_file(lib.work / "k1", payload(72, 5 * MiB))]
    block_sizes = [256 * KiB, 64 * KiB]
    records = [6 * MiB // block_sizes[0], 5 * MiB // block_sizes[1]]
    writers = [subprocess.Popen(["dd", f"if={src}", f"of={node}", f"bs={bs}"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for src, node, bs in zip(sources, nodes, block_sizes, strict=True)]
    for w in writers:
        out, _ = w.communicate(timeout=600)
        print(out, flush=True)
        assert w.returncode == 0
    for node, n in zip(nodes, records, strict=True):
        mt(node, "weof")
        at(node, file=2, block=0, obj=n + 2)

    sessions = kit.session_ids()
    lib.daemon.kill9()
    assert kit.kernel_objects(IQN, "thurvtl")
    lib.daemon.start()
    assert kit.session_ids() == sessions

    out = lib.work / "back"
    for index, (node, src, n) in enumerate(zip(nodes, sources, records, strict=True)):
        # After the gap each drive reports POWER ON/RESET and then MEDIUM MAY HAVE
        # CHANGED: st forgets the position, so rewind first (it may take a retry).
        kit.wait_for(f"{node} rewinds after the restart",
                     lambda node=node: kit.sh(f"mt-st -f {node} rewind",
                                              check=False).returncode == 0, 90)
        at(node, file=0, block=0, obj=0)
        dd_read(node, out, 256 * KiB)
        assert sha256(out) == sha256(src)
        at(node, file=1, block=0, obj=n + 1)
        dd_read(node, out, 256 * KiB)
        assert out.stat().st_size == 0
        at(node, file=2, block=0, obj=n + 2)
        mt(node, "eod")
        assert tell(node) == n + 2
        facts = json.loads(lib.daemon.cli(
            f"cartridge info {('KIL101L8', 'KIL102L8')[index]} --json").stdout)
        assert facts["location"]["element"] == f"drive {index}" and facts["loaded"]

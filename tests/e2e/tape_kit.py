"""The tape library the tape e2e modules share: thurvtld with one changer and two drives
over one iSCSI session, and the mt-st, dd and data helpers (test_vtl_tape.py,
test_vtl_tape_tools.py).

Each test module serves its own library (`serve_library` from a module fixture) and
leaves the drives empty after each test (`leave_drives_empty`, autouse).

Positions are checked from both ends after every step: `mt-st tell` is the drive's own
READ POSITION (the logical object number: records and filemarks both count), `mt-st
status` is what st derived from the drive's answers (file number, block number within
the file, partition; -1 where st cannot know, e.g. after a seek or a backward space).
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
        """Chunks in the local pool, as `thurvtl system stats` reports them."""
        stats = json.loads(self.daemon.cli("system stats --json").stdout)
        return int(stats["cache"]["chunks"])


def attached() -> list[kit.ScsiDev]:
    def ready() -> list[kit.ScsiDev] | None:
        devs = kit.our_devices()
        kinds = sorted(d.kind for d in devs)
        if kinds == ["mediumx", "tape", "tape"] and all(d.node != "-" for d in devs):
            return devs
        return None

    return kit.wait_for("1 changer and 2 drives", ready, kit.DEVICE_TIMEOUT)


def serve_library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    """A test module's library: thurvtld with 2 drives, logged in over iSCSI."""
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
        yield Library(daemon, attached(), work)
    finally:
        kit.stop_and_teardown(daemon)


def leave_drives_empty(lib: Library) -> Iterator[None]:
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

def tar_size(tree: Path, blocking: int) -> int:
    out = kit.sh(f"tar -b {blocking} -cf - -C {tree} . | wc -c").stdout
    return int(out.split()[-1])

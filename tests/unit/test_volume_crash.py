"""kill -9 of a process writing a volume: everything before the last completed
flush() reads back, and every page later written holds one whole version."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.tape_kit import make_tier
from tests.unit.volume_kit import SMALL, make_volumes

PAGES = 64
PS = SMALL["page_size"]

WRITER = r"""
import random, struct, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from tests.unit.tape_kit import make_tier
from tests.unit.volume_kit import make_volumes
root = Path(sys.argv[1])
store = make_volumes(root, tier=make_tier(root, fsync=True), fsync=True, background=True,
                     cache_bytes=8 * 2048)
vol = store.open("kv")
r = 0
while True:
    for page in touched(r):
        vol.write(page * 4, content(page, r))
    vol.flush()
    print(r, flush=True)  # durable: reported only after flush() returned
    r += 1
"""

HELPERS = r"""
def touched(r):
    return sorted(random.Random(r).sample(range(64), 12))

def content(page, r):
    return struct.pack("<II", page, r) * 256
"""


def touched(r: int) -> list[int]:
    return sorted(random.Random(r).sample(range(PAGES), 12))


def content(page: int, r: int) -> bytes:
    return struct.pack("<II", page, r) * (PS // 8)


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_keeps_everything_before_the_last_flush(tmp_path: Path, seed: int) -> None:
    store = make_volumes(tmp_path)
    store.create("kv", PAGES * PS, **SMALL)
    store.shutdown(replicate=False)
    repo = str(Path(__file__).resolve().parents[2])
    script = HELPERS + WRITER
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), repo], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 0.5 + random.Random(seed).random()
    durable = -1
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        durable = int(line)
    os.kill(proc.pid, signal.SIGKILL)  # right after a flush, or in the middle of a round
    proc.wait()
    assert durable >= 0, "the writer never completed a flush"

    store = make_volumes(tmp_path, tier=make_tier(tmp_path))
    vol = store.open("kv")
    for page in range(PAGES):
        got = vol.read(page * 4, 4)
        fenced = max((r for r in range(durable + 1) if page in touched(r)), default=None)
        if got == bytes(PS):
            assert fenced is None, f"page {page} lost round {fenced}"
            continue
        pg, r = struct.unpack_from("<II", got)
        assert got == content(pg, r) and pg == page, f"page {page} is not one whole version"
        assert page in touched(r), f"page {page} holds round {r}, which never wrote it"
        assert fenced is None or r >= fenced, f"page {page} went back to round {r}"
    store.shutdown(replicate=False)


OPS_WRITER = r"""
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from tests.unit.tape_kit import make_tier
from tests.unit.volume_kit import make_volumes
root = Path(sys.argv[1])
# A tiny journal bound: checkpoints (and writer fences at twice it) run all the time.
store = make_volumes(root, tier=make_tier(root, fsync=True), fsync=True, background=True,
                     cache_bytes=8 * 2048, journal_bytes=int(sys.argv[3]))
vol = store.open("kv")
i = 0
while True:
    kind, lba, blocks, fill = op(i)
    if kind == "write":
        vol.write(lba, bytes([fill]) * (blocks * 512))
    else:
        vol.write_zeroes(lba, blocks, unmap=kind == "unmap")
    print(i, flush=True)  # acknowledged: reported only after the call returned
    i += 1
"""

OPS = r"""
import random

def op(i):
    rnd = random.Random(i)
    kind = rnd.choice(["write"] * 6 + ["zero", "unmap"])
    blocks = rnd.choice([1, 3, 4, 9])
    return kind, rnd.randrange(0, 256 - blocks), blocks, i % 250 + 1
"""


def disk_after(ops: int) -> bytearray:
    """The 128 KiB volume after ops [0, ops), by plain byte arithmetic."""
    env: dict[str, object] = {}
    exec(OPS, env)  # noqa: S102 - the same op() the writer ran
    disk = bytearray(PAGES * PS)
    for i in range(ops):
        kind, lba, blocks, fill = env["op"](i)  # type: ignore[operator]
        disk[lba * 512 : (lba + blocks) * 512] = bytes([fill if kind == "write" else 0]) * (
            blocks * 512
        )
    return disk


@pytest.mark.parametrize(("seed", "journal_bytes"), [(0, 1 << 30), (1, 8192), (2, 20000)])
def test_sigkill_keeps_every_acknowledged_command_without_a_fence(
    tmp_path: Path, seed: int, journal_bytes: int
) -> None:
    """No flush at all: the journal alone carries what the page cache held, also
    across checkpoints that retire journal files while the writer goes on."""
    store = make_volumes(tmp_path)
    store.create("kv", PAGES * PS, **SMALL)
    store.shutdown(replicate=False)
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-c", OPS + OPS_WRITER, str(tmp_path), repo, str(journal_bytes)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 0.5 + random.Random(seed).random()
    acked = -1
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    os.kill(proc.pid, signal.SIGKILL)  # mid-command, or between two
    proc.wait()
    for line in proc.stdout.read().split():  # acknowledged before the kill, not yet read
        acked = int(line)
    assert acked >= 0, "the writer never completed a command"

    store = make_volumes(tmp_path, tier=make_tier(tmp_path))
    got = store.open("kv").read(0, PAGES * PS // 512)
    # Every acknowledged command is there; the one in flight may be too, whole.
    assert got in (bytes(disk_after(acked + 1)), bytes(disk_after(acked + 2)))
    store.shutdown(replicate=False)

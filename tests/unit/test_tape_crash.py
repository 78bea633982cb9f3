"""kill -9 at random moments while a cartridge is written: on reopen it is consistent
and holds everything up to the last completed WRITE FILEMARKS."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.tape_kit import make_store, make_tier

WRITER = r"""
import os, random, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from tests.unit.tape_kit import make_store, make_tier
root = Path(sys.argv[1])
store = make_store(root, tier=make_tier(root, fsync=True))
cart = store.open("KIL001L8")
i = 0
while True:
    rnd = random.Random(i)
    if i % 7 == 6:
        cart.write_filemarks(1)
        print(i, flush=True)  # durable: reported only after write_filemarks returned
    else:
        if i % 23 == 22:  # now and then overwrite the last record (truncation)
            cart.space_records(-1) if not cart.position().bop else None
        cart.write(rnd.randbytes(rnd.randrange(1, 40_000)))
    i += 1
"""


def expected(upto: int) -> list[bytes | None]:
    """The object sequence the writer has produced after step `upto`."""
    objs: list[bytes | None] = []
    for i in range(upto + 1):
        rnd = random.Random(i)
        if i % 7 == 6:
            objs.append(None)
        else:
            if i % 23 == 22 and objs:
                objs.pop()  # spaced back over the last object, then overwrote it
            objs.append(rnd.randbytes(rnd.randrange(1, 40_000)))
    return objs


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_keeps_everything_before_the_last_filemark(tmp_path: Path, seed: int) -> None:
    store = make_store(tmp_path)
    store.create("KIL001L8").close()
    store.shutdown(replicate=False)
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), repo],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 0.6 + random.Random(seed).random()
    durable = -1
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        durable = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert durable >= 0, "the writer never reached a filemark"

    store = make_store(tmp_path, tier=make_tier(tmp_path))
    cart = store.open("KIL001L8")
    got: list[bytes | None] = []
    while not cart.position().eod:
        got.append(cart.read())
    # Some later step's sequence, cut anywhere after what was durable at the last
    # filemark and not overwritten by the host since.
    must = expected(durable)
    for step in range(durable, durable + 300):
        seq = expected(step)
        kept = next(
            (i for i, (a, b) in enumerate(zip(must, seq, strict=False)) if a != b), len(must)
        )
        if len(got) >= kept and seq[: len(got)] == got:
            break
    else:
        pytest.fail(f"reopened {len(got)} objects match no write sequence after step {durable}")
    store.shutdown(replicate=False)

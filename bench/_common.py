"""What the ring benchmarks (vtl_ingest.py, vsa_io.py) share: sizes, the fake-ring
command loop, child processes that report JSON, CPU by thread, py-spy breakdowns."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GOOD = 0x00
TEST_UNIT_READY = bytes(6)


def parse_size(text: str) -> int:
    """"4k", "1m", "1.5g", "1t" or plain bytes."""
    text = text.strip().lower()
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(text[-1:], 1)
    try:
        return int(float(text.rstrip("kmgt")) * mult)
    except ValueError:
        raise SystemExit(f"bad size {text!r}: use bytes or a number with k, m, g or t") from None


# ---- the fake ring ------------------------------------------------------------------


def command(
    fake: Any, ring: Any, cdb: bytes, data_out: object = None, data_in_len: int = 0
) -> Any:
    """Queue one command, let the handler run it, reap it (queue depth 1).

    Anything but GOOD is fatal, except for TEST UNIT READY (unit attentions)."""
    cmd_id = fake.submit(cdb, data_out=data_out, data_in_len=data_in_len)
    ring.process()
    done = fake.completions()[cmd_id]
    if done.status != GOOD and cdb[0] != 0x00:
        raise RuntimeError(f"cdb {cdb.hex()}: status {done.status:#x} sense {done.sense.hex()}")
    return done


def clear_unit_attentions(fake: Any, ring: Any) -> None:
    """TEST UNIT READY until the power-on / reset unit attentions are consumed."""
    for _ in range(4):
        if command(fake, ring, TEST_UNIT_READY).status == GOOD:
            return
    raise RuntimeError("the unit never became ready")


# ---- children ------------------------------------------------------------------------


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of the live threads, by kind (name without its number)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: Counter[str] = Counter()
    for t in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        kind = t.name.rstrip("0123456789").rstrip("_-")
        out[kind] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return dict(out)


def report(res: dict) -> None:
    """A child's last word: its result plus its own peak RSS and CPU, as one JSON line."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res["rss"] = ru.ru_maxrss * 1024  # KiB on Linux
    res["cpu"] = ru.ru_utime + ru.ru_stime
    print(json.dumps(res), flush=True)


def run_json_child(args: Sequence[str], profile: Path | None = None) -> dict:
    """Run `python args...` (under `py-spy record` when `profile` names an output file)
    and return the JSON line it printed last."""
    cmd = [sys.executable, *args]
    if profile is not None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        spy_args = ["record", "--idle", "--threads", "--format", "raw", "-r", "200"]
        cmd = [spy, *spy_args, "-o", str(profile), "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{args[:3]} failed ({proc.returncode}): {proc.stderr.decode()[-3000:]}")
    # py-spy writes its own messages to stdout too: the result is the last JSON line.
    res = json.loads([ln for ln in proc.stdout.decode().splitlines() if ln.startswith("{")][-1])
    if profile is not None:
        res["profile"] = str(profile)
    return res


def cpu_line(key: str, cpu: dict[str, float]) -> str:
    parts = sorted(cpu.items(), key=lambda kv: -kv[1])
    return f"- {key}: " + ", ".join(f"{k} {v:.1f}" for k, v in parts if v >= 0.05)


# ---- py-spy breakdowns ----------------------------------------------------------------

# py-spy frames look like "function (path/to/file.py:line)". A sample whose innermost
# frame waits (lock, condition, queue, join) is charged to "wait: <who waits>", named by
# the nearest project frame; any other sample to the first layer rule that matches a
# frame, innermost first. C calls (zstd, BLAKE3, FastCDC, fsync, sqlite) show as the
# Python frame that makes them.
WAITS = (
    "Condition.wait",
    "Event.wait",
    "_wait_for_tstate_lock",
    "Condition.__enter__",
    "_worker (concurrent/futures/thread.py:81)",
    "Semaphore.acquire",
)
Rules = Sequence[tuple[str, Sequence[str]]]


def _owner(frames: list[str]) -> str:
    for frame in reversed(frames):
        # py-spy names the benchmark's own files without their directory.
        if any(k in frame for k in ("thur/", "handlers/", "bench/", "(vsa_io.py", "(_common.py")):
            return frame.split(" (")[0]
    return "idle"


def _layer(
    frames: list[str], layers: Rules, idle_owners: Sequence[str], phases: Rules
) -> str:
    for name, keys in phases:  # a stage of the run (setup...) wins over any layer in it
        if any(k in frame for frame in frames for k in keys):
            return name
    if any(w in frames[-1] for w in WAITS):
        owner = _owner(frames)
        return "idle: no work" if owner == "idle" or owner in idle_owners else f"wait: {owner}"
    for frame in reversed(frames):
        hit = next((name for name, keys in layers if any(k in frame for k in keys)), None)
        if hit:
            return hit
    return "other: interpreter, threading"


def breakdown(
    path: Path,
    layers: Rules,
    threads: Rules,
    *,
    idle_owners: Sequence[str] = (),
    phases: Rules = (),
    top: int = 9,
) -> str:
    """Wall time per thread kind and layer, from a py-spy `--idle --threads` raw profile.

    `threads`: (label, name fragments) — a thread whose name contains a fragment is
    counted under that label; `idle_owners`: project functions whose waiting means
    "no work" (a worker loop) rather than "blocked"; `phases`: (label, frame fragments)
    charged whole when any frame of the sample matches (setup outside the timing)."""
    per: dict[str, Counter[str]] = {}
    seen: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) < 2:
            continue
        head = frames[0]
        kind = next((label for label, tags in threads if any(t in head for t in tags)), "other")
        layer = _layer(frames[1:], layers, idle_owners, phases)
        per.setdefault(kind, Counter())[layer] += int(count)
        seen.setdefault(kind, set()).add(head.split(")")[0])
    out = []
    for kind, counts in per.items():
        total = sum(counts.values())
        n = len(seen[kind])
        shown = ", ".join(f"{name} {c / total:.0%}" for name, c in counts.most_common(top))
        out.append(f"- {kind} ({n}): {shown}")
    return "\n".join(out)

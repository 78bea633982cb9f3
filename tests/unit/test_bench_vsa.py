"""bench/vsa_io.py end to end at its smallest, so the benchmark never rots.

Every phase of both contenders runs in its own process exactly as in a real
run, only on a 2 MiB volume; the benchmark itself fails if the two contenders
read different bytes. Numbers are not asserted (they depend on the machine).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "vsa_io.py"


def _run(tmp_path: Path, *extra: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--work", str(tmp_path), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # the temp dir is cleaned up
    return [ln for ln in out.stdout.splitlines() if ln.startswith("| ") and "---" not in ln]


def test_every_phase_of_both_contenders_runs(tmp_path: Path) -> None:
    rows = _run(tmp_path, "--size", "2m", "--ops", "16", "--hot", "1m", "--data", "mixed")
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows[1:]]
    got = {(c[0], c[1]) for c in cells}
    phases = ("write-1m", "read-1m", "read-4k-miss", "read-4k-hit", "write-4k")
    assert got == {(p, k) for p in phases for k in ("raw", "thur")}
    for c in cells:
        assert float(c[2]) > 0  # IOPS
        assert c[4] == "1.00" or c[1] == "thur"  # raw is its own reference


def test_rss_mode_runs(tmp_path: Path) -> None:
    rows = _run(tmp_path, "--rss", "--size", "1g", "--written", "2m", "--cold")
    assert [r.split("|")[1:3] for r in rows[1:]] == [[" rss ", " raw "], [" rss ", " thur "]]

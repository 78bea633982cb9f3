"""Running libiscsi's `iscsi-test-cu` and reading its results.

`iscsi-test-cu` (CUnit, basic verbose mode) prints `Suite: S` headers and one
`  Test: T ...` line per test; the test's own log lines follow, then `passed` or
`FAILED` plus the failed assertions. A test that cannot run calls CU_PASS after
logging `[SKIPPED] reason`, so CUnit counts it as passed: skips are counted here
from those lines (DESIGN.md). Lines arrive with a timestamp so slow tests show up.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

PASSED, FAILED, SKIPPED = "passed", "FAILED", "skipped"

_SUITE = re.compile(r"^Suite: (\S+)")
_TEST = re.compile(r"^\s+Test: (\S+) \.\.\.(.*)$")
_RESULT = re.compile(r"^(passed|FAILED)\b")
_SKIP = re.compile(r"\[SKIPPED\]\s*(.*)")


@dataclass
class TestResult:
    name: str  # Suite.Test
    status: str = ""  # PASSED, FAILED or SKIPPED once the result line was seen
    skip_reason: str = ""
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0


def parse(lines: Iterable[tuple[float, str]]) -> dict[str, TestResult]:
    """Results by `Suite.Test` from (arrival time, line) pairs of verbose output."""
    results: dict[str, TestResult] = {}
    suite = ""
    current: TestResult | None = None
    last_end: float | None = None  # when the previous test ended (first: the first line)
    for stamp, line in lines:
        last_end = stamp if last_end is None else last_end
        if m := _SUITE.match(line):
            suite, current = m.group(1), None
            continue
        rest = line
        if m := _TEST.match(line):
            name = f"{suite}.{m.group(1)}"
            current = results.setdefault(name, TestResult(name))
            rest = m.group(2).strip()
        if current is None or current.status:
            continue  # setup output of the next suite, or a summary line
        current.lines.append(rest)
        if m := _SKIP.search(rest):
            current.skip_reason = current.skip_reason or m.group(1).strip()
        if m := _RESULT.match(rest):
            failed = m.group(1) == FAILED
            current.status = FAILED if failed else (SKIPPED if current.skip_reason else PASSED)
            current.seconds, last_end = stamp - last_end, stamp
    return results


def run(args: list[str], timeout: float) -> tuple[dict[str, TestResult], str]:
    """Run iscsi-test-cu (line-buffered through stdbuf) and parse what it printed."""
    cmd = ["stdbuf", "-oL", "iscsi-test-cu", *args]
    print("$ " + " ".join(cmd), flush=True)
    stamped: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            stamped.append((time.monotonic(), line.rstrip("\n")))
            print(line, end="", flush=True)  # as it comes: a long run shows where it is
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"iscsi-test-cu ran over {timeout:.0f} s")
        proc.wait(timeout=60)
    return parse(stamped), "\n".join(line for _, line in stamped)


def counts(results: dict[str, TestResult]) -> dict[str, int]:
    out = {PASSED: 0, FAILED: 0, SKIPPED: 0}
    for r in results.values():
        out[r.status] = out.get(r.status, 0) + 1
    return out

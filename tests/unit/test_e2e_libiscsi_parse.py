"""The parser of iscsi-test-cu's output that tests/e2e/test_vsa_conformance.py relies on."""

from __future__ import annotations

from tests.e2e.libiscsi import FAILED, PASSED, SKIPPED, counts, parse

# Verbatim shapes from libiscsi 1.20 (Debian trixie), trimmed.
OUTPUT = """\
Suite: CompareAndWrite
  Test: Simple ...passed
  Test: InvalidDataOutSize ...    [SKIPPED] LBPPB < 2. Skipping test
passed
Suite: Reserve6
  Test: Logout ...    Take out a RESERVE6 from the first initiator
    [FAILED] RESERVE6 command: failed with sense. RESERVATION CONFLICT
    RELEASE6 from the second initiator
FAILED
    1. test_reserve6_logout.c:64  - CU_ASSERT_EQUAL(_r,0)
Suite: iSCSIdatasn
  Test: iSCSIDataSnInvalid ...    [FAILED] WRITE10 command failed with status 0xf000002
passed    [FAILED] PRIN command: failed with sense.

Suite: iSCSIResiduals
  Test: Read10Invalid ...FAILED
    1. test_read10_invalid.c:79  - CU_ASSERT_EQUAL(task->residual_status,SCSI_RESIDUAL_OVERFLOW)

Run Summary:    Type  Total    Ran Passed Failed Inactive
               tests      5      5      3      2        0
"""


def test_statuses_skips_and_durations() -> None:
    lines = [(float(i), line) for i, line in enumerate(OUTPUT.splitlines())]
    results = parse(lines)
    assert {n: r.status for n, r in results.items()} == {
        "CompareAndWrite.Simple": PASSED,
        "CompareAndWrite.InvalidDataOutSize": SKIPPED,
        "Reserve6.Logout": FAILED,
        # Its own log says [FAILED] (an expected negative case) but CUnit passed it; the
        # next suite's setup output after "passed" belongs to no test.
        "iSCSIdatasn.iSCSIDataSnInvalid": PASSED,
        "iSCSIResiduals.Read10Invalid": FAILED,
    }
    assert results["CompareAndWrite.InvalidDataOutSize"].skip_reason == "LBPPB < 2. Skipping test"
    assert counts(results) == {PASSED: 2, FAILED: 2, SKIPPED: 1}
    assert results["CompareAndWrite.Simple"].seconds == 1.0  # line 1 - line 0
    assert results["Reserve6.Logout"].seconds == 8.0 - 3.0  # FAILED line - previous end

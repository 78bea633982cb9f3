"""The audit log on its own: the chain, verify's verdicts and exit codes, torn tails and
their repair, rotation, redaction, concurrent appends and kill -9 mid-append."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from thur import audit as audit_mod
from thur.audit import (
    EXIT_BROKEN,
    EXIT_IO,
    EXIT_VALID,
    GENESIS,
    AuditError,
    AuditLog,
    Who,
    read_entries,
    segment_name,
    verify,
)

ME = Who(uid=os.getuid(), gid=os.getgid(), pid=os.getpid())
REPO = Path(__file__).resolve().parents[2]


def fill(directory: Path, count: int, **kw: Any) -> AuditLog:
    log = AuditLog(directory, **kw)
    for i in range(count):
        ok = i % 3 != 2
        log.record(ME, "cartridge.create", {"barcode": f"ABC{i:03d}L8", "slot": i + 1},
                   {"ok": True} if ok else {"ok": False, "error": f"slot {i + 1} is full"})
    return log


def lines(directory: Path, number: int = 1) -> list[bytes]:
    return (directory / segment_name(number)).read_bytes().splitlines(keepends=True)


def test_entries_follow_the_documented_format(tmp_path: Path) -> None:
    fill(tmp_path, 4).close()
    prev = GENESIS
    for seq, raw in enumerate(lines(tmp_path), 1):
        entry = json.loads(raw)
        assert set(entry) == {"seq", "time", "who", "verb", "args", "result", "prev", "hash"}
        assert entry["seq"] == seq and entry["prev"] == prev
        assert entry["time"].endswith("Z") and entry["who"]["pid"] == os.getpid()
        body = {k: v for k, v in entry.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        assert entry["hash"] == blake3(bytes.fromhex(prev) + canonical).hexdigest()
        assert raw == json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        prev = entry["hash"]
    assert json.loads(lines(tmp_path)[2])["result"] == {"ok": False, "error": "slot 3 is full"}


def test_valid_chain_and_reopen_continues_it(tmp_path: Path) -> None:
    fill(tmp_path, 5).close()
    again = fill(tmp_path, 2)
    report = verify(tmp_path)
    assert (report.status, report.exit_code, report.entries) == ("valid", EXIT_VALID, 7)
    assert (report.first_seq, report.last_seq, report.pruned) == (1, 7, False)
    assert report.last_hash == json.loads(lines(tmp_path)[-1])["hash"]
    assert again.verify().status == "valid"
    again.close()


def test_an_empty_log_is_valid(tmp_path: Path) -> None:
    AuditLog(tmp_path).close()
    report = verify(tmp_path)
    assert (report.status, report.entries) == ("valid", 0)


def test_every_one_byte_edit_in_the_middle_entry_names_it(tmp_path: Path) -> None:
    fill(tmp_path, 9).close()
    path = tmp_path / segment_name(1)
    original = path.read_bytes()
    start = sum(len(raw) for raw in lines(tmp_path)[:4])  # line 5 of 9: the middle
    end = start + len(lines(tmp_path)[4])
    for offset in range(start, end):
        data = bytearray(original)
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        report = verify(tmp_path)
        assert report.exit_code == EXIT_BROKEN, (offset, report)
        assert (report.segment, report.line) == (segment_name(1), 5), report
        assert report.message.startswith(f"{segment_name(1)} line 5 "), report.message
        assert report.entries == 4 and report.last_seq == 4
    path.write_bytes(original)
    assert verify(tmp_path).status == "valid"


@pytest.mark.parametrize("edit, why", [
    (lambda ls: ls[:3] + ls[4:], "seq 5 follows seq 3"),           # an entry removed
    (lambda ls: ls[:3] + [ls[4], ls[3]] + ls[5:], "seq 5 follows seq 3"),  # swapped
    (lambda ls: ls[1:], "the log's first entry is not seq 1"),      # the first removed
    (lambda ls: ls[:3] + [ls[3].replace(b'"slot":4', b'"slot": 4')] + ls[4:],
     "not byte-identical"),                                         # same JSON, other bytes
])
def test_removed_reordered_or_reformatted_entries_are_named(tmp_path: Path, edit: Any,
                                                            why: str) -> None:
    fill(tmp_path, 6).close()
    path = tmp_path / segment_name(1)
    path.write_bytes(b"".join(edit(lines(tmp_path))))
    report = verify(tmp_path)
    assert report.exit_code == EXIT_BROKEN and why in report.message, report.message


@pytest.mark.parametrize("tail", [b'{"args":{"barcode":"ABC', b"\0" * 300])
def test_torn_last_line_is_reported_then_repaired_with_an_entry(tmp_path: Path,
                                                                tail: bytes) -> None:
    fill(tmp_path, 3).close()
    with open(tmp_path / segment_name(1), "ab") as f:
        f.write(tail)  # a crash mid-append (or power loss: zeros past the last write)
    report = verify(tmp_path)
    assert (report.exit_code, report.torn, report.line) == (EXIT_BROKEN, True, 4)
    assert "torn final line" in report.message and segment_name(1) in report.message
    log = AuditLog(tmp_path)  # the daemon's next start
    report = verify(tmp_path)
    assert (report.status, report.last_seq) == ("valid", 4)
    repair = read_entries(tmp_path, 1)[0]
    assert repair["verb"] == "audit.repair" and repair["who"]["pid"] == os.getpid()
    assert repair["args"]["dropped_bytes"] == len(tail)
    assert repair["args"]["segment"] == segment_name(1) and repair["args"]["line"] == 4
    log.record(ME, "changer.load", {"slot": 1, "drive": 0}, {"ok": True})
    log.close()
    assert verify(tmp_path).last_seq == 5


def test_a_line_without_newline_before_the_end_is_broken(tmp_path: Path) -> None:
    fill(tmp_path, 40, segment_bytes=2000).close()
    first = tmp_path / segment_name(1)
    first.write_bytes(first.read_bytes()[:-1])
    report = verify(tmp_path)
    assert report.exit_code == EXIT_BROKEN and not report.torn
    assert report.segment == segment_name(1)


def test_io_errors_exit_2(tmp_path: Path) -> None:
    assert verify(tmp_path / "missing").exit_code == EXIT_IO
    (tmp_path / "file").write_text("x")
    assert verify(tmp_path / "file").exit_code == EXIT_IO
    (tmp_path / "empty").mkdir()
    report = verify(tmp_path / "empty")
    assert report.exit_code == EXIT_IO and "no audit log segments" in report.message
    fill(tmp_path / "dirseg", 2).close()
    (tmp_path / "dirseg" / segment_name(2)).mkdir()  # a segment that cannot be read
    report = verify(tmp_path / "dirseg")
    assert report.exit_code == EXIT_IO and segment_name(2) in report.message
    with pytest.raises(AuditError, match="cannot read"):
        read_entries(tmp_path / "missing")


def test_unreadable_directory_exits_2(tmp_path: Path) -> None:
    fill(tmp_path / "audit", 2).close()
    os.chmod(tmp_path / "audit", 0)
    os.chmod(tmp_path, 0o755)
    # Root reads anything: verify as nobody, as an operator without rights would.
    drop = "os.setgid(65534); os.setuid(65534); " if os.geteuid() == 0 else ""
    code = (f"import os, sys, pathlib; from thur.audit import verify; {drop}"
            f"r = verify(pathlib.Path({str(tmp_path / 'audit')!r})); "
            "print(r.message); sys.exit(r.exit_code)")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                              text=True, check=False)
    finally:
        os.chmod(tmp_path / "audit", 0o750)
    assert done.returncode == EXIT_IO, done
    assert "Permission denied" in done.stdout


def test_secrets_are_redacted(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.record(ME, "target.set", {
        "chap": {"userid": "backupadmin", "password": "s3cret-pass-16ch"},
        "mutual_chap": {"userid": "tgt", "password": "other-secret-12"},
        "hosts": [{"nqn": "nqn.x", "dhchap_key": "DHHC-1:00:abc", "psk": "NVMeTLSkey"}],
        "api_key": "k1", "token": "t1", "secret": "s1", "keyring": "kept", "lun": 3,
        "ratio": float("nan"),
    }, {"ok": True})
    log.close()
    raw = (tmp_path / segment_name(1)).read_bytes()
    for secret in (b"s3cret-pass-16ch", b"other-secret-12", b"DHHC-1", b"NVMeTLSkey", b"k1",
                   b"t1", b"s1"):
        assert secret not in raw
    args = read_entries(tmp_path, 1)[0]["args"]
    assert args["chap"] == {"userid": "backupadmin", "password": "***"}
    assert args["hosts"] == [{"nqn": "nqn.x", "dhchap_key": "***", "psk": "***"}]
    assert (args["keyring"], args["lun"], args["ratio"]) == ("kept", 3, "nan")
    assert verify(tmp_path).status == "valid"


def test_concurrent_appends_keep_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, segment_bytes=4096, keep_segments=1000)
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(40):
            log.record(Who(0, 0, t), "volume.resize", {"name": f"v{t}", "size": i}, {"ok": True})

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    report = verify(tmp_path)
    assert (report.status, report.entries, report.last_seq) == ("valid", 320, 320)
    assert report.segments > 10  # the chain crossed many segment files
    seen = [e["seq"] for e in read_entries(tmp_path, 320)]
    assert seen == list(range(1, 321))


def test_rotation_keeps_a_bounded_number_of_segments(tmp_path: Path) -> None:
    log = fill(tmp_path, 200, segment_bytes=2048, keep_segments=3)
    segments = sorted(p.name for p in tmp_path.glob("audit-*.jsonl"))
    assert len(segments) == 3
    assert all((tmp_path / s).stat().st_size <= 2048 for s in segments[:-1])
    report = verify(tmp_path)
    assert (report.status, report.pruned, report.last_seq) == ("valid", True, 200)
    assert report.first_seq is not None and report.first_seq > 1
    assert "were pruned" in report.message
    # The chain crosses files: the first entry of each segment links to the one before.
    middle = json.loads((tmp_path / segments[1]).read_bytes().splitlines()[0])
    last_before = json.loads((tmp_path / segments[0]).read_bytes().splitlines()[-1])
    assert middle["prev"] == last_before["hash"]
    log.close()
    (tmp_path / segments[1]).unlink()
    report = verify(tmp_path)
    assert report.exit_code == EXIT_BROKEN and f"{segments[1]} is missing" in report.message


def test_an_empty_segment_left_by_a_crash_in_rotation_is_continued(tmp_path: Path) -> None:
    fill(tmp_path, 3).close()
    (tmp_path / segment_name(2)).touch()  # created, then killed before the first entry
    fill(tmp_path, 2).close()
    report = verify(tmp_path)
    assert (report.status, report.last_seq, report.segments) == ("valid", 5, 2)


def test_a_failed_write_is_cut_off_and_the_next_one_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = fill(tmp_path, 2)
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(audit_mod.os, "fdatasync", failing)
    with pytest.raises(AuditError, match="Input/output error"):
        log.record(ME, "changer.load", {}, {"ok": True})
    monkeypatch.setattr(audit_mod.os, "fdatasync", real)
    log.record(ME, "changer.unload", {}, {"ok": True})
    log.close()
    report = verify(tmp_path)
    assert (report.status, report.last_seq) == ("valid", 3)
    assert read_entries(tmp_path, 1)[0]["verb"] == "changer.unload"
    with pytest.raises(AuditError, match="closed"):
        log.ready()


def test_tail_newest_and_after(tmp_path: Path) -> None:
    fill(tmp_path, 30, segment_bytes=1500).close()
    assert [e["seq"] for e in read_entries(tmp_path, 3)] == [28, 29, 30]
    assert [e["seq"] for e in read_entries(tmp_path, 4, after=10)] == [11, 12, 13, 14]
    assert [e["seq"] for e in read_entries(tmp_path, 100, after=27)] == [28, 29, 30]
    assert read_entries(tmp_path, 5, after=30) == []
    assert read_entries(tmp_path, 0) == []
    assert len(read_entries(tmp_path, 1000)) == 30


WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from thur.audit import AuditLog, Who
    log = AuditLog(Path(sys.argv[1]), segment_bytes=4096, keep_segments=1000)
    i = 0
    while True:
        i += 1
        entry = log.record(Who(0, 0, os.getpid()), "volume.create",
                           {"name": "v" * (i % 50), "size": i}, {"ok": True})
        print(entry["seq"], flush=True)  # acknowledged: durable
""")


def test_kill_9_during_appends_leaves_a_log_that_verifies_after_repair(tmp_path: Path) -> None:
    for round_ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO,
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        acked = [int(writer.stdout.readline()) for _ in range(150)]
        writer.kill()
        writer.wait()
        report = verify(tmp_path)
        # At most the append in flight is torn; nothing before it is touched.
        assert report.status == "valid" or report.torn, report
        AuditLog(tmp_path).close()  # the next start: repair if needed
        report = verify(tmp_path)
        assert report.status == "valid", report
        assert report.last_seq is not None and report.last_seq >= acked[-1]
        seqs = {e["seq"] for e in read_entries(tmp_path, 100000)}
        assert set(acked) <= seqs, round_

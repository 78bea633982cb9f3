"""The audit log behind the admin socket and the CLIs: who (SO_PEERCRED on a real Unix
socket), what is recorded and what is not, failing closed, socket permissions, and
`system audit tail|verify` with and without the daemon."""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_library_changer import FakeDrive, make_library
from thur import audit_cli
from thur.admin import AdminError, AdminServer, call, is_read_only, read_only
from thur.audit import AuditLog, read_entries, segment_name, verify
from thur.config import ConfigError, IscsiConfig, parse_vtl_config
from thur.system_verbs import system_verbs
from thur.vsa import cli as vsa_cli
from thur.vsa.verbs import vsa_verbs
from thur.vtl import cli as vtl_cli
from thur.vtl.verbs import library_verbs

REPO = Path(__file__).resolve().parents[2]


class Served:
    def __init__(self, tmp_path: Path) -> None:
        self.sock = tmp_path / "admin.sock"
        self.dir = tmp_path / "data" / "audit"
        self.calls: list[dict[str, Any]] = []

        def change(args: dict[str, Any]) -> dict[str, Any]:
            self.calls.append(args)
            if args.get("refuse"):
                raise AdminError("slot 3 is empty")
            if args.get("bug"):
                raise RuntimeError("oops")
            return {"done": True}

        self.audit = AuditLog(self.dir)
        self.server = AdminServer(self.sock, {
            "thing.change": change,
            "thing.show": read_only(lambda _args: {"shown": True}),
        }, audit=self.audit)
        self.server.start()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    try:
        yield s
    finally:
        s.server.close()


def test_state_changes_and_refusals_are_recorded_reads_are_not(served: Served) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    assert call(served.sock, "thing.change", {"slot": 3, "password": "twelve-chars"}) == \
        {"done": True}
    with pytest.raises(AdminError, match="slot 3 is empty"):
        call(served.sock, "thing.change", {"refuse": True})
    with pytest.raises(AdminError, match="internal error: oops"):
        call(served.sock, "thing.change", {"bug": True})
    assert call(served.sock, "thing.show") == {"shown": True}
    with pytest.raises(AdminError, match="unknown verb"):
        call(served.sock, "thing.nope")
    entries = read_entries(served.dir, 10)
    assert [e["verb"] for e in entries] == ["thing.change"] * 3
    assert entries[0]["who"] == {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(),
                                 "user": me}
    assert entries[0]["args"] == {"slot": 3, "password": "***"}
    assert [e["result"] for e in entries] == [
        {"ok": True}, {"ok": False, "error": "slot 3 is empty"},
        {"ok": False, "error": "internal error: oops"}]
    # The log's own verbs are served with it, and are reads.
    assert call(served.sock, "audit.verify")["status"] == "valid"
    assert [e["seq"] for e in call(served.sock, "audit.tail", {"n": 2})["entries"]] == [2, 3]
    assert call(served.sock, "audit.tail", {"after": 2})["entries"][0]["seq"] == 3
    with pytest.raises(AdminError, match="'n' must be a whole number"):
        call(served.sock, "audit.tail", {"n": -1})
    assert len(read_entries(served.dir, 10)) == 3


def test_who_is_the_peer_process_as_the_kernel_saw_it(served: Served) -> None:
    """Another process calls: its pid, not ours, is recorded (SO_PEERCRED)."""
    code = ("import os, sys, pathlib; from thur.admin import call; "
            "call(pathlib.Path(sys.argv[1]), 'thing.change', {'from': 'child'}); "
            "print(os.getpid())")
    done = subprocess.run([sys.executable, "-c", code, str(served.sock)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    entry = read_entries(served.dir, 1)[0]
    assert entry["args"] == {"from": "child"}
    assert entry["who"]["pid"] == int(done.stdout) != os.getpid()
    assert entry["who"]["uid"] == os.getuid()


def test_concurrent_requests_keep_the_chain(served: Served) -> None:
    def client(t: int) -> None:
        for i in range(15):
            call(served.sock, "thing.change", {"t": t, "i": i})

    threads = [threading.Thread(target=client, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = verify(served.dir)
    assert (report.status, report.entries) == ("valid", 90)


def test_no_state_change_when_it_cannot_be_recorded(served: Served) -> None:
    served.audit.close()  # stands for a log that cannot be written
    with pytest.raises(AdminError, match="refused: the audit log cannot be written"):
        call(served.sock, "thing.change", {"slot": 1})
    assert served.calls == []  # never carried out
    assert call(served.sock, "thing.show") == {"shown": True}  # reads still work


def _other_group() -> grp.struct_group:
    if os.geteuid() == 0:
        candidates = [g for g in grp.getgrall() if g.gr_gid != os.getgid()]
    else:
        candidates = [grp.getgrgid(g) for g in os.getgroups() if g != os.getgid()]
    return candidates[0] if candidates else grp.getgrgid(os.getgid())


def test_socket_mode_group_and_private_bind(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "admin.sock"
    group = _other_group()
    sock.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))  # what a kill -9'd daemon leaves
    stale.close()
    server = AdminServer(sock, {"ping": read_only(lambda _a: 1)}, group=group.gr_name)
    server.start()
    try:
        st = sock.stat()
        assert (st.st_mode & 0o777, st.st_gid) == (0o660, group.gr_gid)
        assert sorted(p.name for p in sock.parent.iterdir()) == ["admin.sock"]
        assert call(sock, "ping") == 1
    finally:
        server.close()
    assert not sock.exists()
    # No such group (a development machine): the daemon's own group, and it still serves.
    server = AdminServer(sock, {"ping": read_only(lambda _a: 1)}, group="no-such-group-thur")
    server.start()
    assert sock.stat().st_gid == os.getgid()
    # A newer daemon took the path over: closing the old one leaves its socket alone.
    newer = AdminServer(sock, {"ping": read_only(lambda _a: 2)})
    newer.start()
    server.close()
    assert call(sock, "ping") == 2
    newer.close()
    assert not sock.exists()


def test_admin_group_config_key(tmp_path: Path) -> None:
    base = {"data_dir": str(tmp_path), "library": {"num_slots": 4, "num_drives": 1}}
    group = grp.getgrgid(os.getgid()).gr_name
    assert parse_vtl_config(base | {"admin_group": group}).admin_group == group
    assert parse_vtl_config(base).admin_group is None
    with pytest.raises(ConfigError, match="'admin_group'.*an existing group"):
        parse_vtl_config(base | {"admin_group": "no-such-group-thur"})


def test_verb_tables_mark_what_changes_state(tmp_path: Path) -> None:
    lib = library_verbs(make_library(tmp_path, [FakeDrive.numbered(i) for i in range(2)]),
                        dict)
    assert {v for v, h in lib.items() if not is_read_only(h)} == {
        "cartridge.create", "cartridge.delete", "changer.load", "changer.unload",
        "changer.move"}
    vsa = vsa_verbs(None, None, dict)  # type: ignore[arg-type]  # table() touches neither
    assert {v for v, h in vsa.items() if not is_read_only(h)} == {
        "volume.create", "volume.resize", "volume.delete"}
    system = system_verbs(None, list, dict, iscsi=IscsiConfig())  # type: ignore[arg-type]
    assert {v for v, h in system.items() if not is_read_only(h)} == {"system.gc"}
    assert set(system) == {"system.stats", "system.cloud_check", "system.gc", "iscsi.chap"}


# ---- the CLIs --------------------------------------------------------------------------


def run(main: Any, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_verify_local_valid_broken_unreadable(served: Served,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(9):
        call(served.sock, "thing.change", {"i": i})
    d = str(served.dir)
    code, out, _ = run(vtl_cli.main, capsys, "system", "audit", "verify", "--audit-dir", d)
    assert code == 0 and out.startswith("audit log valid: 9 entries (seq 1-9)")
    # One byte in the middle of the log: exit 1, one line naming the entry.
    path = served.dir / segment_name(1)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0x01
    path.write_bytes(bytes(data))
    line = data[:middle].count(b"\n") + 1
    code, out, err = run(vtl_cli.main, capsys, "system", "audit", "verify", "--audit-dir", d)
    assert (code, out) == (1, "")
    assert err.startswith(f"thurvtl: audit log broken: {segment_name(1)} line {line} ")
    assert err.count("\n") == 1
    code, out, _ = run(vsa_cli.main, capsys, "system", "audit", "verify", "--audit-dir", d,
                       "--json")
    assert code == 1 and json.loads(out)["line"] == line
    code, _, err = run(vtl_cli.main, capsys, "system", "audit", "verify", "--audit-dir",
                       d + "/nope")
    assert code == 2 and "audit log unreadable: no audit log at" in err


def test_verify_and_tail_through_the_daemon(served: Served,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        call(served.sock, "thing.change", {"i": i})
    sock = ("--socket", str(served.sock))
    code, out, _ = run(vsa_cli.main, capsys, *sock, "system", "audit", "verify")
    assert code == 0 and "3 entries" in out
    code, out, _ = run(vsa_cli.main, capsys, *sock, "system", "audit", "tail", "-n", "2",
                       "--json")
    assert code == 0 and [e["args"] for e in json.loads(out)] == [{"i": 1}, {"i": 2}]
    code, out, _ = run(vtl_cli.main, capsys, *sock, "system", "audit", "tail")
    me = pwd.getpwuid(os.getuid()).pw_name
    rows = out.splitlines()
    assert code == 0 and len(rows) == 3
    assert rows[0].split()[0] == "1" and f"{me} (uid {os.getuid()}, pid {os.getpid()})" in rows[0]
    assert rows[2].endswith('thing.change {"i":2}  ok')


def test_daemon_down_reads_the_files_of_its_config(
        served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    call(served.sock, "thing.change", {"i": 0})
    config = tmp_path / "thurvtl.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nlibrary: {{num_slots: 4}}\n")
    down = ("--socket", str(tmp_path / "gone.sock"))
    code, out, _ = run(vtl_cli.main, capsys, "system", "audit", "verify", "--config",
                       str(config))
    assert code == 0 and "1 entries" in out
    monkeypatch.setattr(vtl_cli, "PRODUCT", audit_cli.Product(
        "thurvtl", config, vtl_cli.PRODUCT.load_config))
    code, out, err = run(vtl_cli.main, capsys, *down, "system", "audit", "verify")
    assert code == 0 and "daemon not running" in err and str(served.dir) in err
    code, out, err = run(vtl_cli.main, capsys, *down, "system", "audit", "tail", "--json")
    assert code == 0 and json.loads(out)[0]["args"] == {"i": 0}
    # Daemon down and no readable config: exit 2 (verify) or 1 (tail), one line each.
    monkeypatch.setattr(vtl_cli, "PRODUCT", audit_cli.Product(
        "thurvtl", tmp_path / "missing.yaml", vtl_cli.PRODUCT.load_config))
    code, _, err = run(vtl_cli.main, capsys, *down, "system", "audit", "verify")
    assert code == 2 and err.count("\n") == 1 and "daemon not running" in err
    code, _, err = run(vtl_cli.main, capsys, *down, "system", "audit", "tail")
    assert code == 1 and err.count("\n") == 1 and "missing.yaml" in err


def test_follow_prints_new_entries_as_they_come(served: Served) -> None:
    call(served.sock, "thing.change", {"i": 0})
    seen: list[int] = []
    naps = 0

    def sleep(_seconds: float) -> None:
        nonlocal naps
        naps += 1
        if naps == 3:
            raise KeyboardInterrupt
        call(served.sock, "thing.change", {"i": naps})

    def fetch(n: int, after: int | None) -> list[dict[str, Any]]:
        return call(served.sock, "audit.tail", {"n": n, "after": after})["entries"]

    with pytest.raises(KeyboardInterrupt):
        audit_cli.follow(fetch, lambda e: seen.append(e["seq"]), 1, sleep=sleep)
    assert seen == [2, 3]


def _serve_once(path: Path, reply: bytes | None) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def answer() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        if reply is not None:
            conn.sendall(reply)
        conn.close()
        listener.close()

    thread = threading.Thread(target=answer)
    thread.start()
    return thread


@pytest.mark.parametrize("reply, why", [
    (None, "closed the connection without answering"),
    (b"<html>\n", "not JSON"),
    (b"[1, 2]\n", "not JSON"),
])
def test_a_daemon_that_misbehaves_gets_one_line(tmp_path: Path, reply: bytes | None, why: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    thread = _serve_once(tmp_path / "odd.sock", reply)
    code, out, err = run(vtl_cli.main, capsys, "--socket", str(tmp_path / "odd.sock"), "ping")
    thread.join()
    assert (code, out) == (1, "") and why in err and err.count("\n") == 1


def test_daemon_down_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    (tmp_path / "file.sock").write_text("")
    for path, why in ((tmp_path / "none.sock", "no socket at"),
                      (tmp_path / "stale.sock", "nobody listens on"),
                      (tmp_path / "file.sock", "nobody listens on")):
        code, out, err = run(vsa_cli.main, capsys, "--socket", str(path), "volume", "list")
        assert (code, out) == (1, "") and why in err and err.count("\n") == 1, err

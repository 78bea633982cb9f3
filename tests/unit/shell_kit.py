"""Daemon-less admin servers for the shell tests, and an in-process shell session.

The servers are the daemons' real verb tables over real storage (a library with
fake drive links; a VolumeStore with a recording exporter), with a real audit
log, on a temporary admin socket: only the kernel is missing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.unit.test_library_changer import FakeDrive, make_library
from tests.unit.test_vsa_verbs import FakeExporter
from thur.admin import AdminServer, Handler
from thur.audit import AuditLog
from thur.library import LibraryChanger
from thur.shell.base import Connection, Root, ThurShell
from thur.system_verbs import system_verbs
from thur.vsa.storage import VsaStorage
from thur.vsa.verbs import vsa_verbs
from thur.vtl.verbs import library_verbs

VTL_INFO = {"target_iqn": "iqn.2026-11.io.thur:vtl", "chassis_serial": "TL00000001",
            "num_slots": 6, "num_mail_slots": 2, "num_drives": 2,
            "drives": [{"index": 0, "lun": 1, "serial": "TD00000000"},
                       {"index": 1, "lun": 2, "serial": "TD00000001"}]}
VSA_INFO = {"target_iqn": "iqn.2026-11.io.thur:vsa", "portals": ["127.0.0.1:3260"],
            "instance": "thurvsa", "sessions": 0, "volumes": []}


@dataclass
class Vtl:
    sock: Path
    library: LibraryChanger
    drives: list[FakeDrive]
    verbs: dict[str, Handler] = field(default_factory=dict)


@contextmanager
def vtl_server(tmp_path: Path,
               adjust: Callable[[dict[str, Handler]], None] | None = None) -> Iterator[Vtl]:
    """thurvtld's verbs over a 6-slot, 2-mail-slot, 2-drive library; `adjust` may
    add or drop verbs (to stand for an older or newer daemon)."""
    drives = [FakeDrive.numbered(i) for i in range(2)]
    library = make_library(tmp_path / "vtl-data", drives)
    verbs = library_verbs(library, lambda: VTL_INFO)
    if adjust is not None:
        adjust(verbs)
    sock = tmp_path / "vtl.sock"
    server = AdminServer(sock, verbs, audit=AuditLog(tmp_path / "vtl-data" / "audit"))
    server.start()
    try:
        yield Vtl(sock, library, drives, verbs)
    finally:
        server.close()


@contextmanager
def vsa_server(tmp_path: Path) -> Iterator[tuple[Path, FakeExporter]]:
    storage = VsaStorage(tmp_path / "vsa-data")
    storage.start()
    exporter = FakeExporter(storage)
    sock = tmp_path / "vsa.sock"
    verbs = vsa_verbs(storage.volumes, exporter, lambda: VSA_INFO) | system_verbs(
        storage.tier, storage.volumes.owners, lambda: None)
    server = AdminServer(sock, verbs, audit=AuditLog(tmp_path / "vsa-data" / "audit"))
    server.start()
    try:
        yield sock, exporter
    finally:
        server.close()
        storage.shutdown()


class Session:
    """A shell in this process, its output captured; `run` returns (stdout, stderr)."""

    def __init__(self, tree: Callable[[ThurShell, Connection], Root], sock: Path,
                 prog: str, prefs: Path) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()
        self.shell = ThurShell(prefs, stdout=self.out, stderr=self.err)
        self.root = tree(self.shell, Connection(sock, prog, prog + "d"))

    def run(self, line: str) -> tuple[str, str]:
        self.shell.failed = False
        start_out, start_err = len(self.out.getvalue()), len(self.err.getvalue())
        self.shell.run_cmdline(line)
        return self.out.getvalue()[start_out:], self.err.getvalue()[start_err:]

    def ok(self, line: str) -> str:
        out, err = self.run(line)
        assert not self.shell.failed and err == "", (line, err)
        return out

    def refused(self, line: str) -> str:
        """The error line of a failing command (and nothing on stdout)."""
        out, err = self.run(line)
        assert self.shell.failed and out == "", (line, out)
        assert err.startswith("Error: ") and err.count("\n") == 1, err
        return err

    @property
    def path(self) -> str:
        return str(self.shell._current_node.path)

    def complete(self, token: str, line: str) -> list[str]:
        """What TAB offers at the end of `line`, the cursor on a `token` ("path",
        "command", "pparam" or "kparam"): configshell's own dispatch, minus readline
        (the pty test drives readline itself)."""
        shell = self.shell
        shell.connection.invalidate()
        text = "" if line.endswith(" ") else line.split(" ")[-1]
        _, path, command, pparams, kparams = shell._parse_cmdline(line)
        return list(shell._dispatch_completion(path, command, pparams, kparams, text, token))

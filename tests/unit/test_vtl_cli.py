"""thurvtl: argument parsing, what it sends, how it prints, and how it fails.

Two levels: a fake admin server with canned replies (the CLI alone), and the daemon's
real verb table over a real library on a temporary socket (CLI + verbs + library, no
kernel).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_library_changer import FakeDrive, make_library
from thur.admin import AdminError, AdminServer
from thur.library import Kind, LibraryChanger, Location
from thur.vtl import cli
from thur.vtl.verbs import library_verbs

# ---- parsing -----------------------------------------------------------------------------


def parse(*argv: str) -> Any:
    return cli.build_parser().parse_args(list(argv))


def test_parsing_of_every_command() -> None:
    a = parse("cartridge", "create", "ABC123L8", "--slot", "3", "--worm")
    assert (a.noun, a.verb, a.barcode, a.slot, a.mail_slot, a.worm) == (
        "cartridge", "create", "ABC123L8", 3, None, True)
    assert parse("cartridge", "create", "ABC123L8", "--mail-slot", "1").mail_slot == 1
    a = parse("changer", "load", "4", "1")
    assert (a.slot, a.drive) == (4, 1)
    a = parse("changer", "unload", "1")
    assert (a.drive, a.slot) == (1, None)
    assert parse("changer", "unload", "1", "7").slot == 7
    # --json before or after the subcommand; absent after it does not reset it before.
    assert parse("cartridge", "list", "--json").json
    assert parse("--json", "cartridge", "list").json
    assert not parse("cartridge", "list").json
    assert parse("--socket", "/x.sock", "ping").socket == Path("/x.sock")


@pytest.mark.parametrize("argv", [
    ["cartridge", "create", "ABC123L8", "--slot", "1", "--mail-slot", "1"],
    ["changer", "load", "1"],
    ["changer", "load", "one", "0"],
    ["cartridge"],
    [],
])
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2


def test_sizes_and_tables() -> None:
    assert [cli.size(n) for n in (None, 0, 999, 1500, 12 * 10**12)] == [
        "-", "0 B", "999 B", "1.50 kB", "12.00 TB"]
    assert cli.table(("A", "LONGER"), [("x", None), ("yyy", 2)]).splitlines() == [
        "A    LONGER", "x    -", "yyy  2"]


# ---- against a fake daemon ---------------------------------------------------------------


class FakeDaemon:
    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.replies: dict[str, Any] = {}
        verbs = {v: self._answer(v) for v in (
            "ping", "library.info", "cartridge.create", "cartridge.list", "cartridge.info",
            "changer.inventory", "changer.load", "changer.unload")}
        self.server = AdminServer(sock, verbs)

    def _answer(self, verb: str) -> Any:
        def handle(args: dict[str, Any]) -> Any:
            self.requests.append((verb, args))
            reply = self.replies.get(verb)
            if isinstance(reply, Exception):
                raise reply
            return reply

        return handle


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(tmp_path / "fake.sock")
    daemon.server.start()
    yield daemon
    daemon.server.close()


def run_cli(sock: Path, *argv: str) -> list[str]:
    return ["--socket", str(sock), *argv]


SLOT3 = {"element": "slot 3", "type": "slot", "number": 3, "address": 0x402}
DRIVE0 = {"element": "drive 0", "type": "drive", "number": 0, "address": 0x100}
CART = {"barcode": "ABC123L8", "location": SLOT3, "source": None, "loaded": False,
        "worm": True, "cleaning": False, "write_protected": False,
        "capacity_bytes": 12 * 10**12, "used_bytes": 2_500_000, "load_count": 4,
        "local_only_bytes": None}


def test_requests_and_human_output(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["cartridge.create"] = CART
    assert cli.main(run_cli(fake.sock, "cartridge", "create", "ABC123L8", "--slot", "3",
                            "--worm")) == 0
    assert fake.requests[-1] == ("cartridge.create",
                                 {"barcode": "ABC123L8", "worm": True, "slot": 3})
    assert capsys.readouterr().out == "created ABC123L8 in slot 3\n"

    fake.replies["cartridge.list"] = [CART, {**CART, "barcode": "CLN001L8", "location": None,
                                            "cleaning": True, "worm": False, "used_bytes": 0}]
    assert cli.main(run_cli(fake.sock, "cartridge", "list")) == 0
    assert capsys.readouterr().out.splitlines() == [
        "BARCODE   LOCATION             TYPE      USED",
        "ABC123L8  slot 3               WORM      2.50 MB",
        "CLN001L8  outside the library  cleaning  0 B",
    ]

    fake.replies["cartridge.info"] = CART
    assert cli.main(run_cli(fake.sock, "cartridge", "info", "ABC123L8")) == 0
    out = capsys.readouterr().out
    assert "Location    slot 3 (element 0x0402)" in out
    assert "Local-only  unknown" in out and "Load count  4" in out and "Flags       worm" in out

    fake.replies["changer.load"] = {"barcode": "ABC123L8", "from": SLOT3, "to": DRIVE0}
    assert cli.main(run_cli(fake.sock, "changer", "load", "3", "0")) == 0
    assert fake.requests[-1] == ("changer.load", {"slot": 3, "drive": 0})
    assert capsys.readouterr().out == "ABC123L8: slot 3 -> drive 0\n"

    fake.replies["changer.unload"] = {"barcode": "ABC123L8", "from": DRIVE0, "to": SLOT3}
    assert cli.main(run_cli(fake.sock, "changer", "unload", "0")) == 0
    assert fake.requests[-1] == ("changer.unload", {"drive": 0})


def test_json_output_is_the_reply(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["cartridge.list"] = [CART]
    assert cli.main(run_cli(fake.sock, "cartridge", "list", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == [CART]


def test_refusal_is_one_line_and_exit_1(fake: FakeDaemon,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["changer.load"] = AdminError("slot 3 is empty")
    assert cli.main(run_cli(fake.sock, "changer", "load", "3", "0")) == 1
    captured = capsys.readouterr()
    assert captured.err == "thurvtl: slot 3 is empty\n" and captured.out == ""


def test_daemon_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(run_cli(tmp_path / "none.sock", "changer", "inventory")) == 1
    assert "daemon not running" in capsys.readouterr().err


# ---- the real verb table over a real library ---------------------------------------------

INFO = {"target_iqn": "iqn.2026-11.io.thur:t", "chassis_serial": "TL00000001",
        "num_slots": 6, "num_mail_slots": 2, "num_drives": 2,
        "drives": [{"index": 0, "lun": 1, "serial": "TD00000000"}]}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, LibraryChanger, list[FakeDrive]]]:
    drives = [FakeDrive.numbered(i) for i in range(2)]
    lib = make_library(tmp_path / "data", drives)
    server = AdminServer(tmp_path / "admin.sock", library_verbs(lib, lambda: INFO))
    server.start()
    yield tmp_path / "admin.sock", lib, drives
    server.close()


def cli_ok(sock: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cli.main(run_cli(sock, *argv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def cli_refused(sock: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cli.main(run_cli(sock, *argv))
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert captured.err.startswith("thurvtl: ") and captured.err.count("\n") == 1
    return captured.err


def test_verbs_end_to_end(daemon: tuple[Path, LibraryChanger, list[FakeDrive]],
                          capsys: pytest.CaptureFixture[str]) -> None:
    sock, lib, drives = daemon
    assert "created ABC001L8 in slot 1" in cli_ok(sock, capsys, "cartridge", "create",
                                                  "ABC001L8")
    cli_ok(sock, capsys, "cartridge", "create", "WRM001L8", "--slot", "4", "--worm")
    # Mail slots continue the slot numbering (slots 7, 8 here), as mtx shows them.
    out = cli_ok(sock, capsys, "cartridge", "create", "IMP001L8", "--slot", "8")
    assert "slot 8 (mail slot 2)" in out
    cli_ok(sock, capsys, "cartridge", "create", "IMP002L8", "--mail-slot", "1")
    assert lib.inventory.find("IMP002L8").location == Location(Kind.MAIL, 0)

    assert cli_ok(sock, capsys, "changer", "load", "4", "1") == "WRM001L8: slot 4 -> drive 1\n"
    assert drives[1].medium.barcode == "WRM001L8"
    inventory = json.loads(cli_ok(sock, capsys, "changer", "inventory", "--json"))
    rows = {e["element"]: e for e in inventory["elements"]}
    assert rows["drive 1"] == {"element": "drive 1", "type": "drive", "number": 1,
                               "address": 0x101, "full": True, "barcode": "WRM001L8",
                               "source": "slot 4", "imported": False}
    assert rows["slot 8 (mail slot 2)"]["imported"] and rows["robot"]["address"] == 0
    assert len(rows) == 1 + 2 + 6 + 2
    table = cli_ok(sock, capsys, "changer", "inventory").splitlines()
    assert table[0].split() == ["ELEMENT", "ADDRESS", "TYPE", "STATUS", "BARCODE", "FROM"]
    assert table[3].split() == ["drive", "1", "0x0101", "drive", "full", "WRM001L8", "slot",
                                "4"]

    listing = json.loads(cli_ok(sock, capsys, "cartridge", "list", "--json"))
    assert [(c["barcode"], c["location"]["element"]) for c in listing] == [
        ("WRM001L8", "drive 1"), ("ABC001L8", "slot 1"),
        ("IMP002L8", "slot 7 (mail slot 1)"), ("IMP001L8", "slot 8 (mail slot 2)")]
    info = json.loads(cli_ok(sock, capsys, "cartridge", "info", "WRM001L8", "--json"))
    assert info["worm"] and info["loaded"] and info["capacity_bytes"] == 12 * 10**12
    assert info["local_only_bytes"] is None and info["used_bytes"] == 0

    assert cli_ok(sock, capsys, "changer", "unload", "1") == "WRM001L8: drive 1 -> slot 4\n"
    assert drives[1].medium is None
    cli_ok(sock, capsys, "changer", "load", "1", "0")
    assert "drive 0 -> slot 2" in cli_ok(sock, capsys, "changer", "unload", "0", "2")
    assert "TL00000001" in cli_ok(sock, capsys, "library", "info")
    assert cli_ok(sock, capsys, "ping") == "thurvtld is running\n"


def test_verbs_refuse_with_reasons(daemon: tuple[Path, LibraryChanger, list[FakeDrive]],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    sock, lib, drives = daemon
    cli_ok(sock, capsys, "cartridge", "create", "ABC001L8", "--slot", "1")
    cli_ok(sock, capsys, "cartridge", "create", "ABC002L8", "--slot", "2")
    before = lib.inventory
    cases = [
        (("cartridge", "create", "abc003l8"), "use upper case"),
        (("cartridge", "create", "ABC1"), "4 characters"),
        (("cartridge", "create", "ABC001L8"), "already exists (slot 1)"),
        (("cartridge", "create", "ABC003L8", "--slot", "2"), "slot 2 holds ABC002L8"),
        (("cartridge", "create", "ABC003L8", "--slot", "9"), "no slot 9"),
        (("cartridge", "create", "ABC003L8", "--mail-slot", "3"), "no mail slot 3"),
        (("cartridge", "create", "CLN001L8", "--worm"), "cleaning"),
        (("cartridge", "info", "NOPE01L8"), "no cartridge NOPE01L8"),
        (("changer", "load", "3", "0"), "slot 3 is empty"),
        (("changer", "load", "1", "2"), "no drive 2"),
        (("changer", "unload", "0"), "drive 0 is empty"),
    ]
    for argv, reason in cases:
        assert reason in cli_refused(sock, capsys, *argv), argv
    cli_ok(sock, capsys, "changer", "load", "1", "0")
    assert "drive 0 holds ABC001L8" in cli_refused(sock, capsys, "changer", "load", "2", "0")
    drives[0].prevent = True
    assert "drive 0 is locked" in cli_refused(sock, capsys, "changer", "unload", "0")
    drives[0].prevent = False
    lib.set_prevent_removal(True)
    assert "changer is locked" in cli_refused(sock, capsys, "changer", "unload", "0", "7")
    lib.set_prevent_removal(False)
    assert [p.barcode for p in lib.inventory] == ["ABC001L8", "ABC002L8"]
    assert lib.inventory != before  # only the one load went through


# ---- the daemon's object graph, without the kernel ---------------------------------------


def test_daemon_serves_the_verbs_and_reloads_drives_after_restart(tmp_path: Path) -> None:
    from thur.config import parse_vtl_config
    from thur.library import ShrinkRefused
    from thur.vtl.daemon import Daemon

    def config(slots: int) -> Any:
        return parse_vtl_config({"data_dir": str(tmp_path), "admin_socket": "/run/x.sock",
                                 "library": {"num_slots": slots, "num_mail_slots": 1,
                                             "num_drives": 2}})

    first = Daemon(config(4))
    verbs = first._verbs()
    verbs["cartridge.create"]({"barcode": "ABC001L8", "slot": 3})
    verbs["changer.load"]({"slot": 3, "drive": 1})
    info = verbs["library.info"]({})
    assert [d["lun"] for d in info["drives"]] == [1, 2]
    # kill -9: nothing is shut down; a new process builds its graph from data_dir.
    again = Daemon(config(4))
    drive = again.units[2].engine
    assert drive.medium is not None and drive.medium.barcode == "ABC001L8"
    assert again.units[0].engine.model is again.library
    again._verbs()["cartridge.create"]({"barcode": "ABC002L8", "slot": 4})
    with pytest.raises(AdminError, match="drive 1 holds ABC001L8"):
        again._verbs()["changer.load"]({"slot": 4, "drive": 1})
    with pytest.raises(ShrinkRefused, match="cannot shrink num_slots to 2: slot 4 holds ABC002"):
        Daemon(config(2))

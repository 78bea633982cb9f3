"""The shells' node trees against the daemons' real verb tables on a real admin socket.

In-process (thur/shell/base.py ThurShell with captured output): what each node shows
and sends, refusals, verbs the daemon lacks, the tree following the daemon, TAB
completion's candidates, where the shell keeps its files, and `PROG shell` as a CLI
command. test_shell_pty.py drives the same shells through a real terminal.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.shell_kit import Session, Vtl, vsa_server, vtl_server
from tests.unit.test_vsa_verbs import FakeExporter
from thur.admin import AdminError, call
from thur.shell import base, vsa, vtl
from thur.vsa import cli as vsa_cli
from thur.vtl import cli as vtl_cli

GiB = 1 << 30


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[Vtl]:
    with vtl_server(tmp_path) as served:
        yield served


@pytest.fixture
def sh(lib: Vtl, tmp_path: Path) -> Session:
    return Session(vtl.tree, lib.sock, "thurvtl", tmp_path / "state")


def names(out: str) -> list[str]:
    """The node names of an `ls` tree, top to bottom."""
    return [line.split("o- ", 1)[1].split()[0] for line in out.splitlines()]


def line_of(out: str, name: str) -> str:
    """The `ls` line of node `name`."""
    found = [line for line in out.splitlines() if line.split("o- ", 1)[1].split()[0] == name]
    assert len(found) == 1, (name, out)
    return found[0]


def summary(out: str, name: str) -> str:
    text = line_of(out, name)
    return text[text.rindex("[") + 1:text.rindex("]")]


# ---- thurvtl ------------------------------------------------------------------------------


def test_the_tree(sh: Session) -> None:
    out = sh.ok("ls /")
    assert names(out) == [
        "/", "backends", "cartridges", "drives", "0", "1", "iscsi", "library", "mailslots",
        "1", "2", "slots", "1", "2", "3", "4", "5", "6", "system"]
    assert summary(out, "library") == "TL00000001: 6 slots, 2 mail slots, 2 drives"
    assert summary(out, "slots") == "6 slots, 0 full"
    assert summary(out, "iscsi") == "iqn.2026-11.io.thur:vtl"
    assert summary(out, "cartridges") == "0 cartridges"
    assert "Chassis serial  TL00000001" in sh.ok("/library info")
    assert sh.ok("/iscsi info").splitlines() == [
        "Target  iqn.2026-11.io.thur:vtl", "LUN 0   changer (serial TL00000001)",
        "LUN 1   drive 0 (serial TD00000000)", "LUN 2   drive 1 (serial TD00000001)"]


def test_cartridges_slots_and_drives(sh: Session, lib: Vtl) -> None:
    assert sh.ok("cd /cartridges") == "" and sh.path == "/cartridges"
    assert sh.ok("create L00001L8") == "created L00001L8 in slot 1\n"
    assert sh.ok("create W00001L8 slot=4 worm=true") == "created W00001L8 in slot 4\n"
    assert sh.ok("create M00001L8 mail_slot=2") == "created M00001L8 in slot 8 (mail slot 2)\n"
    out = sh.ok("ls")
    assert summary(out, "cartridges") == "3 cartridges"
    assert summary(out, "W00001L8") == "slot 4, WORM, 0 B used"
    assert summary(out, "L00001L8") == "slot 1, data, 0 B used"
    slots = sh.ok("ls /slots")
    assert [summary(slots, n) for n in "123456"] == [
        "L00001L8", "empty", "empty", "W00001L8", "empty", "empty"]
    mail = sh.ok("ls /mailslots")
    assert (summary(mail, "1"), summary(mail, "2")) == ("slot 7: empty", "slot 8: M00001L8")
    assert "Location    slot 4 (element 0x0403)" in sh.ok("info W00001L8")
    assert sh.ok("info").splitlines()[0].split() == ["BARCODE", "LOCATION", "TYPE", "USED"]

    # A slot moves its cartridge into a drive; the drive sends it back.
    assert sh.ok("/slots/4 load drive=1") == "W00001L8: slot 4 -> drive 1\n"
    assert lib.drives[1].medium is not None and lib.drives[1].medium.barcode == "W00001L8"
    assert summary(sh.ok("ls /drives"), "1") == "W00001L8 loaded from slot 4"
    info = sh.ok("/drives/1 info")
    assert info.startswith("drive 1: element 0x0101, holds W00001L8 (from slot 4)\n")
    assert "Location    drive 1 (element 0x0101), loaded" in info
    assert sh.ok("/drives/1 unload") == "W00001L8: drive 1 -> slot 4\n"
    sh.ok("/slots/1 load 0")
    assert sh.ok("/drives/0 unload slot=2") == "L00001L8: drive 0 -> slot 2\n"
    assert sh.ok("/slots/2 info").startswith(
        "slot 2: element 0x0401, holds L00001L8 (from drive 0)\nBarcode     L00001L8\n")

    # A cartridge's facts, read-only, through get.
    sh.ok("cd W00001L8")
    assert sh.path == "/cartridges/W00001L8"
    assert sh.ok("get attribute worm used_bytes capacity_bytes").split() == [
        "worm=true", "[ro]", "used_bytes=0", "[ro]", "capacity_bytes=12000000000000", "[ro]"]
    assert "Flags       worm" in sh.ok("info")
    assert "read-only" in sh.refused("set attribute worm=false")
    assert [p.barcode for p in lib.library.inventory] == ["L00001L8", "W00001L8", "M00001L8"]


def test_refusals_are_one_line_and_the_shell_goes_on(sh: Session, lib: Vtl) -> None:
    sh.ok("/cartridges create L00001L8 slot=1")
    cases = [
        ("/cartridges create abc001l8", "use upper case"),
        ("/cartridges create L00001L8", "already exists (slot 1)"),
        ("/cartridges create L00002L8 slot=9", "no slot 9"),
        ("/cartridges create L00002L8 slot=x", "'slot' must be a whole number, not 'x'"),
        ("/cartridges create L00002L8 worm=maybe", "'worm' must be true or false"),
        ("/cartridges create L00002L8 slot=1 mail_slot=1", "a slot or a mail slot, not both"),
        ("/cartridges create", "Missing required parameter barcode"),
        ("/cartridges info NOPE01L8", "no cartridge NOPE01L8"),
        ("/slots/3 load drive=0", "slot 3 is empty"),
        ("/slots/1 load drive=5", "no drive 5"),
        ("/drives/0 unload", "drive 0 is empty"),
        ("cd /nowhere", "No such path /nowhere"),
        ("frobnicate", "frobnicate"),
    ]
    for line, why in cases:
        assert why in sh.refused(line), line
    assert sh.path == "/"
    assert summary(sh.ok("ls /cartridges"), "L00001L8") == "slot 1, data, 0 B used"
    # The daemon recorded the refused changes like the CLI's, with their reasons.
    tail = sh.ok("/system audit_tail n=3").splitlines()
    assert [t.split(")  ")[1].split()[0] for t in tail] == [
        "changer.load", "changer.load", "changer.unload"]
    assert tail[2].endswith('changer.unload {"drive":0}  error: drive 0 is empty')
    assert "error: cartridge L00001L8 already exists" in sh.ok("/system audit_tail n=20")


def test_verbs_the_daemon_lacks_are_named(tmp_path: Path) -> None:
    def older(verbs: dict[str, Any]) -> None:
        for verb in ("cartridge.delete", "drive.status", "system.stats", "system.gc"):
            verbs.pop(verb, None)

    with vtl_server(tmp_path, older) as served:
        sh = Session(vtl.tree, served.sock, "thurvtl", tmp_path / "state")
        sh.ok("/cartridges create L00001L8")
        assert sh.refused("/cartridges delete L00001L8") == (
            "Error: cartridge.delete is not supported by this thurvtld (it is older than "
            "this shell)\n")
        assert "system.gc is not supported" in sh.refused("/system gc")
        # drive info without drive.status: the inventory's part, no error.
        assert sh.ok("/drives/0 info") == "drive 0: element 0x0100, empty\n"


def test_delete_and_newer_verbs_send_their_requests(tmp_path: Path) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def newer(verbs: dict[str, Any]) -> None:
        def record(verb: str, reply: Any) -> Any:
            def handle(args: dict[str, Any]) -> Any:
                seen.append((verb, args))
                return reply
            return handle

        verbs["cartridge.delete"] = record("cartridge.delete", {"barcode": "L00001L8"})
        verbs["drive.status"] = record("drive.status", {"ready": True, "position": 12})
        verbs["system.stats"] = record("system.stats", {"pool": {"chunks": 3, "bytes": 9}})

    with vtl_server(tmp_path, newer) as served:
        sh = Session(vtl.tree, served.sock, "thurvtl", tmp_path / "state")
        sh.ok("/cartridges create L00001L8")
        assert sh.ok("/cartridges/L00001L8 delete") == "deleted L00001L8\n"
        assert sh.ok("/drives/1 info").endswith("ready: True\nposition: 12\n")
        assert sh.ok("/system stats") == "pool:\n  chunks: 3\n  bytes: 9\n"
    assert seen == [("cartridge.delete", {"barcode": "L00001L8"}),
                    ("drive.status", {"drive": 1}), ("system.stats", {})]


def test_the_tree_follows_the_daemon(sh: Session, lib: Vtl) -> None:
    """Changes made elsewhere (the CLI, mtx) show at the next command line."""
    assert "0 cartridges" in sh.ok("ls /cartridges")
    call(lib.sock, "cartridge.create", {"barcode": "EXT001L8", "slot": 2})
    sh.ok("cd /cartridges/EXT001L8")
    assert summary(sh.ok("ls"), "EXT001L8") == "slot 2, data, 0 B used"
    call(lib.sock, "changer.load", {"slot": 2, "drive": 0})
    assert summary(sh.ok("ls"), "EXT001L8") == "drive 0, data, 0 B used"
    assert "Location    drive 0 (element 0x0100), loaded" in sh.ok("info")
    assert summary(sh.ok("ls /slots"), "2") == "empty"


def test_completion_candidates(sh: Session) -> None:
    sh.ok("/cartridges create L00001L8 slot=2")
    sh.ok("/cartridges create L00002L8 slot=5")
    sh.ok("/slots/5 load drive=0")
    assert sh.complete("path", "cd /cart") == ["/cartridges/"]
    assert sorted(sh.complete("path", "ls /cartridges/L")) == ["/cartridges/L00001L8/",
                                                               "/cartridges/L00002L8/"]
    assert sh.complete("pparam", "/cartridges info L00001") == ["L00001L8 "]
    assert sh.complete("pparam", "/cartridges delete ") == ["L00001L8", "L00002L8",
                                                            "barcode="]
    assert sh.complete("kparam", "/cartridges create X slot=") == [
        "slot=1", "slot=3", "slot=4", "slot=5", "slot=6"]
    assert sh.complete("kparam", "/cartridges create X worm=t") == ["worm=true "]
    assert sh.complete("kparam", "/cartridges create X mail_slot=") == [
        "mail_slot=1", "mail_slot=2"]
    assert sh.complete("kparam", "/slots/2 load drive=") == ["drive=1 "]
    assert sh.complete("kparam", "/drives/0 unload slot=") == [
        "slot=1", "slot=3", "slot=4", "slot=5", "slot=6"]
    assert sh.complete("command", "/cartridges cr") == ["create "]


def test_files_stay_in_the_state_directory(lib: Vtl, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert base.prefs_dir("thurvtl") == tmp_path / "xdg" / "thurvtl"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert base.prefs_dir("thurvsa") == tmp_path / "home" / ".local" / "state" / "thurvsa"
    assert (tmp_path / "home" / ".local" / "state" / "thurvsa").stat().st_mode & 0o777 == 0o700
    monkeypatch.setenv("HOME", "/proc/none")  # cannot be created: no history, still a shell
    assert base.prefs_dir("thurvtl") is None
    sh = Session(vtl.tree, lib.sock, "thurvtl", tmp_path / "state")
    sh.ok("ls /")
    # (log.txt too, once something is worth logging)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "history.txt", "prefs.bin"]


def test_unreadable_preferences_are_set_aside(lib: Vtl, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "prefs.bin").write_bytes(b"\x80\x02}q")  # torn pickle
    sh = Session(vtl.tree, lib.sock, "thurvtl", state)
    assert "moved to" in capsys.readouterr().err
    assert (state / "prefs.bin.unreadable").read_bytes() == b"\x80\x02}q"
    assert "o- cartridges" in sh.ok("ls /")


# ---- `thurvtl shell` as a command ----------------------------------------------------------


def test_one_shot_commands(lib: Vtl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path / "vtl-data")
    before = sorted(p.name for p in Path.cwd().iterdir())
    sock = ["--socket", str(lib.sock)]
    assert vtl_cli.main([*sock, "shell", "/cartridges", "create", "L00001L8", "worm=true"]) == 0
    assert capsys.readouterr().out == "created L00001L8 in slot 1\n"
    assert vtl_cli.main([*sock, "shell", "ls", "/slots"]) == 0
    assert "L00001L8" in line_of(capsys.readouterr().out, "1")
    assert vtl_cli.main([*sock, "shell", "/cartridges", "create", "L00001L8"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        "Error: cartridge L00001L8 already exists (slot 1)\n")
    assert sorted(p.name for p in Path.cwd().iterdir()) == before
    assert (tmp_path / "xdg" / "thurvtl" / "prefs.bin").exists()


def test_script_on_stdin_stops_at_the_first_failure(lib: Vtl, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    conn = base.Connection(lib.sock, "thurvtl", "thurvtld")
    script = io.StringIO("cd /cartridges\ncreate A00001L8\ncreate A00002L8\n")
    assert base.run(conn, vtl.tree, [], stdin=script) == 0
    assert capsys.readouterr().out.splitlines() == ["created A00001L8 in slot 1",
                                                    "created A00002L8 in slot 2"]
    script = io.StringIO("/cartridges create A00001L8\n/cartridges create A00003L8\n")
    assert base.run(conn, vtl.tree, [], stdin=script) == 1
    assert "already exists" in capsys.readouterr().err
    assert "A00003L8" not in [p.barcode for p in lib.library.inventory]


def test_daemon_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert vtl_cli.main(["--socket", str(tmp_path / "none.sock"), "shell"]) == 1
    assert capsys.readouterr().err == (
        f"thurvtl: daemon not running (no socket at {tmp_path / 'none.sock'})\n")
    assert vsa_cli.main(["--socket", str(tmp_path / "none.sock"), "shell", "ls"]) == 1
    assert "thurvsa: daemon not running" in capsys.readouterr().err


def test_daemon_stops_mid_session(tmp_path: Path) -> None:
    with vtl_server(tmp_path) as served:
        sh = Session(vtl.tree, served.sock, "thurvtl", tmp_path / "state")
        sh.ok("cd /cartridges")
    assert "daemon not running" in sh.refused("ls")
    assert sh.ok("pwd") == "/cartridges\n"  # what needs no daemon still works


# ---- thurvsa ------------------------------------------------------------------------------


@pytest.fixture
def vsa_sh(tmp_path: Path) -> Iterator[tuple[Session, FakeExporter]]:
    with vsa_server(tmp_path) as (sock, exporter):
        yield Session(vsa.tree, sock, "thurvsa", tmp_path / "state"), exporter


def test_volumes(vsa_sh: tuple[Session, FakeExporter]) -> None:
    sh, exporter = vsa_sh
    assert names(sh.ok("ls /")) == [
        "/", "backends", "bucket", "cache", "iscsi", "system", "volumes"]
    sh.ok("cd /volumes")
    assert sh.ok("create vol1 size=2G") == "created vol1: 2.00 GiB, LUN 0\n"
    assert sh.ok("create vol2 64M lun=7") == "created vol2: 64.00 MiB, LUN 7\n"
    out = sh.ok("ls")
    assert summary(out, "volumes") == "2 volumes"
    assert summary(out, "vol1") == "2.00 GiB, LUN 0, 0 B used, exported"
    assert sh.ok("info").splitlines()[0].split() == ["NAME", "LUN", "SIZE", "USED", "EXPORTED"]
    assert "Size         64.00 MiB (67108864 bytes)" in sh.ok("info vol2")
    assert sh.ok("resize vol2 size=128M") == "resized vol2 to 128.00 MiB\n"

    # get/set on the volume: size is settable (a resize), the rest read-only.
    sh.ok("cd vol1")
    assert sh.ok("get attribute size lun exported").split() == [
        "size=2.00", "GiB", "(2147483648", "bytes)", "lun=0", "[ro]", "exported=true", "[ro]"]
    assert sh.ok("set attribute size=4G") == (
        "Parameter size is now '4.00 GiB (4294967296 bytes)'.\n")
    assert ("resized", "vol1") in exporter.calls
    assert "Not setting size! invalid size 'lots'" in sh.refused("set attribute size=lots")
    assert "Parameter lun is read-only" in sh.refused("set attribute lun=3")
    exporter.engines["vol1"].volume.write(3 * GiB // 4096, b"x" * 65536)
    exporter.engines["vol1"].volume.flush()
    assert "allocated beyond the new end" in sh.refused("set attribute size=1G")
    assert sh.ok("resize 8G") == "resized vol1 to 8.00 GiB\n"
    assert "Size         8.00 GiB (8589934592 bytes)" in sh.ok("info")

    # Deleting the volume one stands in takes the shell up to what is left.
    exporter.session_count = 1
    assert "exported and in use" in sh.refused("/volumes delete vol1")
    assert sh.ok("/volumes delete vol1 force=true") == "deleted vol1\n"
    assert sh.path == "/volumes"
    assert names(sh.ok("ls")) == ["volumes", "vol2"]
    assert "volume nope does not exist" in sh.refused("resize nope size=1G")
    assert "'size': invalid size" in sh.refused("create v3 size=1X")
    assert "Target    iqn.2026-11.io.thur:vsa" in sh.ok("/iscsi info")


def test_backends(vsa_sh: tuple[Session, FakeExporter]) -> None:
    sh, _ = vsa_sh
    sh.ok("/volumes create v size=64M")
    out = sh.ok("ls /backends")
    assert summary(out, "cache").startswith("cache: ")
    assert summary(out, "bucket").startswith("local:") or "/" in summary(out, "bucket")
    assert "stored_bytes:" in sh.ok("/backends/bucket info")
    checked = sh.ok("/backends/bucket check")
    assert "ok: True" in checked and "steps:" in checked
    assert "only the bucket is checked" in sh.refused("/backends/cache check")


def test_volume_completion(vsa_sh: tuple[Session, FakeExporter]) -> None:
    sh, _ = vsa_sh
    sh.ok("/volumes create data size=1G lun=1")
    assert sh.complete("pparam", "/volumes resize d") == ["data "]
    assert sh.complete("kparam", "/volumes create x size=1") == ["size=1G", "size=10G",
                                                                  "size=100G", "size=1T"]
    assert sh.complete("kparam", "/volumes create x size=1G lun=") == [
        "lun=0", "lun=2", "lun=3", "lun=4"]
    assert sh.complete("kparam", "/volumes delete data force=") == ["force=true",
                                                                     "force=false"]
    assert sh.complete("pparam", "/volumes/data set attribute s") == ["size="]
    assert sh.complete("pparam", "/volumes/data get attribute se") == ["serial "]


def test_refused_call_does_not_leave_a_stale_tree(vsa_sh: tuple[Session, FakeExporter]) -> None:
    sh, exporter = vsa_sh
    exporter.fail_export = True
    assert "created but could not be exported" in sh.refused("/volumes create v size=1G")
    # The volume exists (the daemon said so): the tree shows it at once, unexported.
    assert summary(sh.ok("ls /volumes"), "v") == "1.00 GiB, LUN 0, 0 B used, not exported"
    with pytest.raises(AdminError):
        call(sh.shell.connection.socket, "volume.create", {"name": "v", "size": GiB})

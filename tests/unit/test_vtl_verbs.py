"""thurvtl's library verbs beyond create/list/load: bounds, delete, move, drive status, CHAP.

Through the CLI against the daemon's real verb table over a real Unix socket, on a
library of real `TapeDrive` engines over the pool-backed cartridge store (the `vtl`
fixture of test_system_verbs.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_system_verbs import SECRET, Vtl, fill, ok, refused, vtl  # noqa: F401
from thur.audit import read_entries
from thur.library import Geometry, Kind, Location, ShrinkRefused


def test_library_bounds_is_the_envelope_start_up_enforces(
        vtl: Vtl,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    empty = json.loads(ok(vtl, capsys, "library", "bounds", "--json"))
    assert empty["num_slots"] == {"current": 6, "min": 1, "max": 65536 - 1 - 2 - 2,
                                  "max_same_addresses": 65535 - 1024 + 1, "blocker": None}
    assert (empty["num_mail_slots"]["min"], empty["num_mail_slots"]["max_same_addresses"]) == (
        0, 1024 - 512)
    assert (empty["num_drives"]["min"], empty["num_drives"]["max_same_addresses"]) == (1, 255)
    ok(vtl, capsys, "cartridge", "create", "SLT005L8", "--slot", "5")
    ok(vtl, capsys, "cartridge", "create", "MAL002L8", "--mail-slot", "2")
    ok(vtl, capsys, "cartridge", "create", "DRV001L8", "--slot", "1")
    ok(vtl, capsys, "changer", "load", "1", "1")
    bounds = json.loads(ok(vtl, capsys, "library", "bounds", "--json"))
    assert {k: b["min"] for k, b in bounds.items()} == {
        "num_slots": 5, "num_mail_slots": 2, "num_drives": 2}
    assert bounds["num_slots"]["blocker"] == {"barcode": "SLT005L8", "element": "slot 5"}
    assert bounds["num_drives"]["blocker"] == {"barcode": "DRV001L8", "element": "drive 1"}
    # The same rule the daemon applies on start: the minimum fits, one less is refused.
    inventory = vtl.lib.inventory
    inventory.fit(Geometry(5, 2, 2))
    for smaller in (Geometry(4, 2, 2), Geometry(5, 1, 2), Geometry(5, 2, 1)):
        with pytest.raises(ShrinkRefused):
            inventory.fit(smaller)
    table = ok(vtl, capsys, "library", "bounds").splitlines()
    assert table[0].split()[:3] == ["KEY", "NOW", "MIN"]
    assert table[1].split()[:3] == ["num_slots", "6", "5"] and "SLT005L8 in slot 5" in table[1]


def test_cartridge_delete_refuses_in_a_drive_and_data_without_force(
        vtl: Vtl,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    ok(vtl, capsys, "cartridge", "create", "BLANK1L8", "--slot", "2")
    ok(vtl, capsys, "cartridge", "create", "DATA01L8", "--slot", "3")
    fill(vtl, "DATA01L8", [b"r" * 1000] * 3)
    ok(vtl, capsys, "changer", "load", "3", "0")
    assert "DATA01L8 is in drive 0; unload it first" in refused(
        vtl, capsys, "cartridge", "delete", "DATA01L8", "--force")
    ok(vtl, capsys, "changer", "unload", "0")
    assert "holds 3000 bytes of data; delete it with --force" in refused(
        vtl, capsys, "cartridge", "delete", "DATA01L8")
    assert "no cartridge NOPE01L8" in refused(vtl, capsys, "cartridge", "delete", "NOPE01L8")
    assert ok(vtl, capsys, "cartridge", "delete", "BLANK1L8") == "deleted BLANK1L8\n"
    gone = json.loads(ok(vtl, capsys, "cartridge", "delete", "DATA01L8", "--force", "--json"))
    assert gone["deleted"] and gone["used_bytes"] == 3000
    assert gone["location"]["element"] == "slot 3"
    assert vtl.lib.inventory.find("DATA01L8") is None and not vtl.store.exists("DATA01L8")
    assert not vtl.store.list() and ok(vtl, capsys, "cartridge", "list") == "no cartridges\n"
    bucket = Path(vtl.sock.parent / "bucket")
    assert not [p for p in bucket.rglob("*") if "DATA01L8" in str(p) and p.is_file()]
    entries = [(e["verb"], e["result"]["ok"]) for e in read_entries(vtl.audit, 50)
               if e["verb"] == "cartridge.delete"]
    assert entries == [("cartridge.delete", False)] * 3 + [("cartridge.delete", True)] * 2


def test_changer_move_between_any_elements_like_move_medium(
        vtl: Vtl,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    ok(vtl, capsys, "cartridge", "create", "MOV001L8", "--slot", "1")
    ok(vtl, capsys, "cartridge", "create", "MOV002L8", "--slot", "2")
    assert ok(vtl, capsys, "changer", "move", "slot:1", "drive:1") == (
        "MOV001L8: slot 1 -> drive 1\n")
    assert vtl.drives[1].medium is not None and vtl.drives[1].medium.barcode == "MOV001L8"
    assert ok(vtl, capsys, "changer", "move", "drive:1", "mail:2") == (
        "MOV001L8: drive 1 -> slot 8 (mail slot 2)\n")
    assert vtl.drives[1].medium is None
    # By element address (mail slot 2 is 0x0201, slot 6 is 0x0405) and mtx slot number.
    moved = json.loads(ok(vtl, capsys, "changer", "move", "0x0201", "addr:1029", "--json"))
    assert (moved["from"]["address"], moved["to"]["element"]) == (0x201, "slot 6")
    assert ok(vtl, capsys, "changer", "move", "slot:6", "slot:7") == (
        "MOV001L8: slot 6 -> slot 7 (mail slot 1)\n")
    # The changer LU sees the same inventory (READ ELEMENT STATUS goes through status()).
    status = vtl.lib.status(0x200)
    assert status.full and status.barcode == "MOV001L8" and status.source == 0x405
    cases = [
        (("slot:3", "drive:0"), "slot 3 is empty"),
        (("slot:2", "slot:7"), "holds MOV001L8"),
        (("slot:9", "drive:0"), "no slot 9"),
        (("drive:2", "slot:3"), "no drive 2"),
        (("bay:1", "slot:3"), "'from': 'bay:1' is not an element"),
        (("slot:2", "0x0000"), "'to': no storage, mail slot or drive element at address 0x0000"),
        (("slot:2", "0x9999"), "no storage, mail slot or drive element"),
    ]
    for (src, dst), reason in cases:
        assert reason in refused(vtl, capsys, "changer", "move", src, dst), (src, dst)
    vtl.lib.set_prevent_removal(True)
    assert "changer is locked" in refused(vtl, capsys, "changer", "move", "slot:2", "mail:2")
    vtl.lib.set_prevent_removal(False)
    assert vtl.lib.inventory.find("MOV002L8").location == Location(Kind.SLOT, 1)


def test_drive_status_from_the_engines(vtl: Vtl,  # noqa: F811
                                       capsys: pytest.CaptureFixture[str]) -> None:
    ok(vtl, capsys, "cartridge", "create", "DRV001L8", "--slot", "4")
    ok(vtl, capsys, "changer", "load", "4", "0")
    medium = vtl.drives[0].medium
    assert medium is not None
    for _ in range(3):
        medium.write(b"x" * 4096)
    vtl.drives[0].block_length = 4096
    drives = json.loads(ok(vtl, capsys, "drive", "status", "--json"))
    first, second = drives
    assert (first["element"], first["serial"], first["barcode"]) == (
        "drive 0", "TD00000000", "DRV001L8")
    assert first["medium"] and first["threaded"] and first["block_size"] == 4096
    assert first["position"] == {"partition": 0, "object": 3, "file": 0, "bop": False,
                                 "eod": True}
    assert first["compression"] is True and first["write_protected"] is False
    assert first["encryption"] == {"encrypt": False, "decrypt": False, "key_loaded": False}
    assert first["load_count"] == 1 and first["prevent_removal"] is False
    assert (second["barcode"], second["medium"], second["position"]) == (None, False, None)
    rows = ok(vtl, capsys, "drive", "status").splitlines()
    assert rows[0].split() == ["DRIVE", "SERIAL", "BARCODE", "MEDIUM", "POSITION", "BLOCK",
                               "COMPRESS", "ENCRYPT", "WP"]
    assert rows[1].startswith("drive 0  TD00000000  DRV001L8  threaded  partition 0, "
                              "object 3, file 0 (EOD)  4096")
    detail = ok(vtl, capsys, "drive", "status", "0")
    assert "Cartridge       DRV001L8" in detail and "Encryption      off" in detail
    assert "no drive 5" in refused(vtl, capsys, "drive", "status", "5")


def test_iscsi_chap_never_shows_a_password(vtl: Vtl,  # noqa: F811
                                           capsys: pytest.CaptureFixture[str]) -> None:
    raw = ok(vtl, capsys, "iscsi", "chap", "--json")
    chap = json.loads(raw)
    assert chap["chap"] == {"userid": "backup", "password": "(set)"}
    assert chap["mutual_chap"]["userid"] == "target" and chap["discovery_chap"] is None
    assert chap["acls"] == ["iqn.2026-11.io.example:host"] and not chap["demo_mode"]
    text = ok(vtl, capsys, "iscsi", "chap")
    assert SECRET not in raw and SECRET not in text
    assert "CHAP            user backup, password (set)" in text and "config file" in text

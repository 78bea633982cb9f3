"""inventory.json: atomic replacement, reload, invariants, and reconciling with the config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from thur.config import ConfigError, LibraryConfig, parse_vtl_config
from thur.library import (
    Geometry,
    Inventory,
    InventoryCorrupt,
    InventoryFile,
    Kind,
    Location,
    MemoryCartridgeSource,
    Placement,
    ShrinkRefused,
    load_or_mint,
    open_library,
)
from thur.library.barcode import BarcodeError, parse_barcode

SLOT, MAIL, DRIVE = Kind.SLOT, Kind.MAIL, Kind.DRIVE


def slot(i: int) -> Location:
    return Location(SLOT, i)


def sample() -> Inventory:
    return Inventory([
        Placement("AAA001L8", slot(0)),
        Placement("AAA002L8", Location(DRIVE, 1), source=slot(4)),
        Placement("AAA003L8", Location(MAIL, 0), imported=True),
    ])


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    f = InventoryFile(tmp_path)
    assert f.load() == Inventory()  # no file yet: an empty library
    f.save(sample())
    assert f.load() == sample()
    raw = json.loads(f.path.read_text())
    assert raw["version"] == 1
    assert [c["barcode"] for c in raw["cartridges"]] == ["AAA002L8", "AAA001L8", "AAA003L8"]
    assert raw["cartridges"][1] == {"barcode": "AAA001L8", "imported": False,
                                    "location": {"kind": "slot", "index": 0}, "source": None}


def test_save_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = InventoryFile(tmp_path)
    f.save(sample())
    before = f.path.read_bytes()
    # A crash after the temporary file is written but before the rename must leave the
    # old inventory in place: the rename is the commit point.
    def crash(*_args: object) -> None:
        raise OSError("killed before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        f.save(sample().without("AAA001L8"))
    assert f.path.read_bytes() == before
    assert f.load() == sample()


def test_invariants_each_barcode_once_each_element_once() -> None:
    with pytest.raises(InventoryCorrupt, match="two places"):
        Inventory([Placement("A00001", slot(0)), Placement("A00001", slot(1))])
    with pytest.raises(InventoryCorrupt, match="holds both"):
        Inventory([Placement("A00001", slot(0)), Placement("A00002", slot(0))])


def test_corrupt_files_are_named(tmp_path: Path) -> None:
    f = InventoryFile(tmp_path)
    f.path.write_text("{not json")
    with pytest.raises(InventoryCorrupt, match="inventory.json: not JSON"):
        f.load()
    f.path.write_text(json.dumps({"version": 99, "cartridges": []}))
    with pytest.raises(InventoryCorrupt, match="version 99"):
        f.load()
    f.path.write_text(json.dumps({"version": 1, "cartridges": [
        {"barcode": "A00001", "location": {"kind": "shelf", "index": 0}}]}))
    with pytest.raises(InventoryCorrupt):
        f.load()


def test_moves_are_simultaneous_and_record_the_source() -> None:
    inv = Inventory([Placement("A00001", slot(0)), Placement("A00002", slot(1))])
    swapped = inv.with_moves([(slot(0), slot(1)), (slot(1), slot(0))])
    assert swapped.at(slot(0)) == Placement("A00002", slot(0), source=slot(1))
    assert swapped.at(slot(1)) == Placement("A00001", slot(1), source=slot(0))
    assert inv.at(slot(0)).barcode == "A00001"  # the original is untouched


def test_fit_growing_always_works() -> None:
    assert sample().fit(Geometry(slots=100, mail_slots=10, drives=8)) == sample()


@pytest.mark.parametrize(("geometry", "message"), [
    (Geometry(slots=10, mail_slots=1, drives=2),
     "cannot shrink num_slots to 10: slot 12 holds ABC123L8; move it first"),
    (Geometry(slots=20, mail_slots=1, drives=1),
     "cannot shrink num_drives to 1: drive 1 holds DRV001L8; unload it first"),
    (Geometry(slots=20, mail_slots=0, drives=2),
     "cannot shrink num_mail_slots to 0: mail slot 1 holds MAIL01L8; move it first"),
])
def test_fit_refuses_to_orphan_a_cartridge(geometry: Geometry, message: str) -> None:
    inv = Inventory([
        Placement("ABC123L8", slot(11)),
        Placement("DRV001L8", Location(DRIVE, 1), source=slot(2)),
        Placement("MAIL01L8", Location(MAIL, 0)),
    ])
    with pytest.raises(ShrinkRefused) as err:
        inv.fit(geometry)
    assert str(err.value) == message


def test_fit_counts_further_orphans_and_forgets_vanished_sources() -> None:
    inv = Inventory([Placement("A00001", slot(8)), Placement("A00002", slot(9))])
    with pytest.raises(ShrinkRefused, match=r"slot 9 holds A00001; move it first \(and 1 more"):
        inv.fit(Geometry(slots=5, mail_slots=0, drives=1))
    moved = Inventory([Placement("A00001", slot(0), source=slot(30))])
    assert moved.fit(Geometry(slots=10, mail_slots=0, drives=1)).at(slot(0)).source is None


def test_open_library_refuses_a_shrink_and_leaves_the_file(tmp_path: Path) -> None:
    big = LibraryConfig(num_slots=20, num_mail_slots=2, num_drives=2)
    identity = load_or_mint(tmp_path, big)
    source = MemoryCartridgeSource()
    lib = open_library(tmp_path, big, identity, source, [_drive(i) for i in range(2)])
    lib.create_cartridge("ABC123L8", slot(11))
    before = (tmp_path / "inventory.json").read_bytes()
    small = LibraryConfig(num_slots=10, num_mail_slots=2, num_drives=2)
    with pytest.raises(ShrinkRefused, match="slot 12 holds ABC123L8"):
        open_library(tmp_path, small, load_or_mint(tmp_path, small), source,
                     [_drive(i) for i in range(2)])
    assert (tmp_path / "inventory.json").read_bytes() == before
    # Shrinking past empty slots only is fine.
    ok = LibraryConfig(num_slots=12, num_mail_slots=0, num_drives=1)
    lib = open_library(tmp_path, ok, load_or_mint(tmp_path, ok), source, [_drive(0)])
    assert lib.inventory.find("ABC123L8").location == slot(11)


def test_open_library_adopts_cartridges_storage_holds(tmp_path: Path) -> None:
    config = LibraryConfig(num_slots=3, num_mail_slots=0, num_drives=1)
    source = MemoryCartridgeSource()
    lib = open_library(tmp_path, config, load_or_mint(tmp_path, config), source, [_drive(0)])
    lib.create_cartridge("KEEP01L8", slot(0))
    for barcode in ("NEW001L8", "NEW002L8", "NEW003L8"):  # e.g. restored from the bucket
        source.create(barcode)
    lib = open_library(tmp_path, config, load_or_mint(tmp_path, config), source, [_drive(0)])
    assert [(p.barcode, p.location) for p in lib.inventory] == [
        ("KEEP01L8", slot(0)), ("NEW001L8", slot(1)), ("NEW002L8", slot(2))]
    assert InventoryFile(tmp_path).load() == lib.inventory
    # The one that did not fit is still listed, outside the library.
    assert [f.barcode for f in lib.all_facts() if f.placement is None] == ["NEW003L8"]


def test_config_caps_the_total_element_count() -> None:
    base = {"data_dir": "/var/lib/thur"}
    ok = parse_vtl_config({**base, "library": {"num_slots": 65000, "num_mail_slots": 279,
                                               "num_drives": 255}})
    assert ok.library.num_slots == 65000
    with pytest.raises(ConfigError, match="16-bit"):
        parse_vtl_config({**base, "library": {"num_slots": 65535, "num_mail_slots": 10,
                                              "num_drives": 2}})


@pytest.mark.parametrize("good", ["ABC123", "ABC123L8", "CLN001L8", "A1B2C3D", "000001"])
def test_good_barcodes(good: str) -> None:
    assert parse_barcode(good).text == good


@pytest.mark.parametrize(("bad", "why"), [
    ("ABC12", "5 characters"), ("ABC123L8X", "9 characters"), ("abc123l8", "use upper case"),
    ("ABC 12", "only upper-case"), ("ABC-12", "only upper-case"), ("ÄBC123", "only upper-case"),
])
def test_bad_barcodes(bad: str, why: str) -> None:
    with pytest.raises(BarcodeError, match=why):
        parse_barcode(bad)


def test_barcode_kinds() -> None:
    assert parse_barcode("CLN001L8").cleaning and not parse_barcode("ABC001L8").cleaning
    assert parse_barcode("ABC001L8").media_suffix == "L8"
    assert parse_barcode("ABC001").media_suffix is None


def _drive(i: int):  # noqa: ANN202 - the fake lives with the changer tests
    from tests.unit.test_library_changer import FakeDrive

    return FakeDrive.numbered(i)

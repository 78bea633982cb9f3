"""library.json: minted once, stable across starts, grows with the config."""

import json
import logging
from pathlib import Path

import pytest

from thur.config import LibraryConfig
from thur.library import ElementBases, geometry_of, load_or_mint


def test_mint_then_reload_is_stable(tmp_path: Path) -> None:
    first = load_or_mint(tmp_path, LibraryConfig(num_drives=2))
    again = load_or_mint(tmp_path, LibraryConfig(num_drives=2))
    assert first == again
    assert len(first.drive_serials) == 2
    assert len(set(first.drive_serials)) == 2
    raw = json.loads((tmp_path / "library.json").read_text())
    assert raw["version"] == 2
    assert raw["element_bases"] == {
        "transport": 0, "data_transfer": 0x100, "import_export": 0x200, "storage": 0x400}


def test_growing_keeps_existing_serials(tmp_path: Path) -> None:
    small = load_or_mint(tmp_path, LibraryConfig(num_drives=1))
    big = load_or_mint(tmp_path, LibraryConfig(num_drives=3))
    assert big.drive_serials[0] == small.drive_serials[0]
    assert big.chassis_serial == small.chassis_serial
    assert len(big.drive_serials) == 3


def test_version_1_file_gains_the_standard_bases(tmp_path: Path) -> None:
    (tmp_path / "library.json").write_text(json.dumps(
        {"version": 1, "chassis_serial": "TL0000AAAA", "drive_serials": ["TD0000BBBB"]}))
    identity = load_or_mint(tmp_path, LibraryConfig(num_drives=1, num_slots=8, num_mail_slots=2))
    assert identity.chassis_serial == "TL0000AAAA"
    assert identity.element_bases == ElementBases(0, 0x100, 0x200, 0x400)
    assert json.loads((tmp_path / "library.json").read_text())["version"] == 2


def test_bases_are_kept_across_growth_that_fits(tmp_path: Path) -> None:
    # Bases minted for a small library stay when it grows within their windows, even
    # if a fresh mint for the big size would choose the same or different ones.
    first = load_or_mint(tmp_path, LibraryConfig(num_slots=10, num_mail_slots=2, num_drives=1))
    grown = load_or_mint(tmp_path, LibraryConfig(num_slots=5000, num_mail_slots=100,
                                                 num_drives=8))
    assert grown.element_bases == first.element_bases


def test_growth_past_the_windows_rebases(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    load_or_mint(tmp_path, LibraryConfig(num_slots=10, num_mail_slots=2, num_drives=1))
    big = LibraryConfig(num_slots=60000, num_mail_slots=1000, num_drives=4)
    with caplog.at_level(logging.WARNING):
        grown = load_or_mint(tmp_path, big)
    assert "re-based" in caplog.text
    assert grown.element_bases is not None
    grown.element_bases.layout(geometry_of(big))  # fits 16 bits without overlap
    assert load_or_mint(tmp_path, big) == grown  # and is stable from then on

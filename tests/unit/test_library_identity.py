"""library.json: minted once, stable across starts, grows with the config."""

import json
from pathlib import Path

from thur.config import LibraryConfig
from thur.library import load_or_mint


def test_mint_then_reload_is_stable(tmp_path: Path) -> None:
    first = load_or_mint(tmp_path, LibraryConfig(num_drives=2))
    again = load_or_mint(tmp_path, LibraryConfig(num_drives=2))
    assert first == again
    assert len(first.drive_serials) == 2
    assert len(set(first.drive_serials)) == 2
    assert json.loads((tmp_path / "library.json").read_text())["version"] == 1


def test_growing_keeps_existing_serials(tmp_path: Path) -> None:
    small = load_or_mint(tmp_path, LibraryConfig(num_drives=1))
    big = load_or_mint(tmp_path, LibraryConfig(num_drives=3))
    assert big.drive_serials[0] == small.drive_serials[0]
    assert big.chassis_serial == small.chassis_serial
    assert len(big.drive_serials) == 3

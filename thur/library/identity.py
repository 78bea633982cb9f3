"""The library's stable identity: chassis and drive serials, element addresses.

Minted once into `<data_dir>/library.json` and reused on every start, because
backup software remembers drives by serial number and elements by address.
Growing the library appends drives; shrinking is refused here when a drive
would disappear while it holds state (later issues add cartridges).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from thur.config import LibraryConfig
from thur.fsutil import atomic_write_json

FORMAT_VERSION = 1
# Element address bases (SMC mode page 1Dh). Ranges never overlap for the caps
# in thur.config: 1 transport, up to 255 drives, 65535 mail slots is the
# exception, so mail slots and storage slots get their own 16-bit windows only
# as large as configured (see element_bases()).
TRANSPORT_BASE = 0x0000
DRIVE_BASE = 0x0100


@dataclass(frozen=True)
class LibraryIdentity:
    chassis_serial: str
    drive_serials: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "version": FORMAT_VERSION,
            "chassis_serial": self.chassis_serial,
            "drive_serials": list(self.drive_serials),
        }


def _new_serial(prefix: str) -> str:
    # Ten characters like real drive serials; random so two libraries on one
    # SAN never collide.
    return prefix + secrets.token_hex(4).upper()


def load_or_mint(data_dir: Path, library: LibraryConfig) -> LibraryIdentity:
    """Load library.json, minting it on first start and growing it as configured."""
    path = data_dir / "library.json"
    if path.exists():
        raw = json.loads(path.read_text())
        if raw.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported format version {raw.get('version')!r}")
        identity = LibraryIdentity(raw["chassis_serial"], tuple(raw["drive_serials"]))
    else:
        identity = LibraryIdentity(_new_serial("TL"), ())
    serials = list(identity.drive_serials)
    while len(serials) < library.num_drives:
        serials.append(_new_serial("TD"))
    # Serials of drives beyond num_drives are kept so a later grow gets them back.
    grown = LibraryIdentity(identity.chassis_serial, tuple(serials))
    if grown != identity or not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, grown.to_json())
    return grown

"""The library's stable identity: chassis and drive serials, element address bases.

Minted once into `<data_dir>/library.json` and reused on every start, because
backup software remembers drives by serial number and elements by address.
Growing the library appends drives (their serials are minted then and kept even
if the library shrinks again, so a later grow gets the same drives back).

Element address bases stay as minted while the configured counts fit them. A
grow that no longer fits (more than 512 mail slots with the standard bases, say)
re-mints the bases and logs that addresses changed: the inventory stores logical
locations, never addresses, so nothing in the library is lost, but backup
software must re-scan the changer. Shrinking is checked against the inventory in
thur.library.inventory (a cartridge must never be orphaned).

Format (version 2; version 1 had no `element_bases` and used the standard ones):
    {"version": 2, "chassis_serial": "TL…", "drive_serials": ["TD…", …],
     "element_bases": {"transport": 0, "data_transfer": 256,
                       "import_export": 512, "storage": 1024}}
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from thur.config import LibraryConfig
from thur.fsutil import atomic_write_json
from thur.library.elements import ElementBases, Geometry

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def geometry_of(library: LibraryConfig) -> Geometry:
    return Geometry(library.num_slots, library.num_mail_slots, library.num_drives)


@dataclass(frozen=True)
class LibraryIdentity:
    chassis_serial: str
    drive_serials: tuple[str, ...]
    element_bases: ElementBases | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "version": FORMAT_VERSION,
            "chassis_serial": self.chassis_serial,
            "drive_serials": list(self.drive_serials),
        }
        if self.element_bases is not None:
            out["element_bases"] = self.element_bases.to_json()
        return out


def _new_serial(prefix: str) -> str:
    # Ten characters like real drive serials; random so two libraries on one
    # SAN never collide.
    return prefix + secrets.token_hex(4).upper()


def _fitting_bases(current: ElementBases | None, geometry: Geometry) -> ElementBases:
    if current is not None:
        try:
            current.layout(geometry)
            return current
        except ValueError as exc:
            fresh = ElementBases.standard(geometry)
            log.warning(
                "element addresses re-based for the new library size (%s): %s -> %s; "
                "re-scan the changer in your backup software",
                exc, current.to_json(), fresh.to_json(),
            )
            return fresh
    return ElementBases.standard(geometry)


def load_or_mint(data_dir: Path, library: LibraryConfig) -> LibraryIdentity:
    """Load library.json, minting it on first start and growing it as configured."""
    path = data_dir / "library.json"
    exists = path.exists()
    if exists:
        raw = json.loads(path.read_text())
        if raw.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"{path}: unsupported format version {raw.get('version')!r}")
        bases = raw.get("element_bases")
        identity = LibraryIdentity(
            raw["chassis_serial"],
            tuple(raw["drive_serials"]),
            ElementBases.from_json(bases) if bases else None,
        )
        version = raw["version"]
    else:
        identity = LibraryIdentity(_new_serial("TL"), ())
        version = FORMAT_VERSION
    serials = list(identity.drive_serials)
    while len(serials) < library.num_drives:
        serials.append(_new_serial("TD"))
    bases = _fitting_bases(identity.element_bases, geometry_of(library))
    grown = LibraryIdentity(identity.chassis_serial, tuple(serials), bases)
    if grown != identity or not exists or version != FORMAT_VERSION:
        data_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, grown.to_json())
    return grown

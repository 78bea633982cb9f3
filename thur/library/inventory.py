"""The inventory: which cartridge is in which element, persisted atomically.

`Inventory` is an immutable value: every change builds a new one, which is written to
disk (thur.fsutil.atomic_write_json: tmp + fsync + rename + dir fsync) *before* the
library adopts it and before a MOVE MEDIUM is acknowledged. A kill -9 therefore leaves
either the state before or after a move, never a cartridge in two places or none.

File `<data_dir>/inventory.json` (format version 1):
    {"version": 1,
     "cartridges": [
        {"barcode": "ABC001L8",
         "location": {"kind": "slot" | "mail" | "drive", "index": 0},
         "source": {"kind": ..., "index": ...} | null,
         "imported": false},
        ...]}
`index` is 0-based within its kind (people see slot index + 1, see elements.py);
`source` is the element the cartridge was last moved from (SMC SVALID/source address,
and where `thurvtl changer unload` returns it); `imported` marks a cartridge an
operator placed in a mail slot that the changer has not moved since (IMPEXP).
Invariants, checked on load and on every change: each barcode appears once, each
location holds at most one cartridge.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from thur.fsutil import atomic_write_json
from thur.library.elements import Geometry, Kind, Location

FORMAT_VERSION = 1


class InventoryCorrupt(ValueError):
    """inventory.json cannot be read or breaks an invariant."""


class ShrinkRefused(ValueError):
    """The configured library is smaller than the inventory needs."""


@dataclass(frozen=True, slots=True)
class Placement:
    barcode: str
    location: Location
    source: Location | None = None
    imported: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "barcode": self.barcode,
            "location": self.location.to_json(),
            "source": self.source.to_json() if self.source else None,
            "imported": self.imported,
        }

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> Placement:
        barcode = raw.get("barcode")
        if not isinstance(barcode, str) or not barcode:
            raise ValueError(f"bad barcode {barcode!r}")
        source = raw.get("source")
        return cls(
            barcode,
            Location.from_json(raw.get("location")),
            Location.from_json(source) if source is not None else None,
            bool(raw.get("imported", False)),
        )


class Inventory:
    """An immutable set of placements with both indexes; changes return a new one."""

    __slots__ = ("_by_barcode", "_by_location")

    def __init__(self, placements: Iterable[Placement] = ()) -> None:
        self._by_barcode: dict[str, Placement] = {}
        self._by_location: dict[Location, Placement] = {}
        for p in placements:
            if p.barcode in self._by_barcode:
                raise InventoryCorrupt(f"cartridge {p.barcode} is in two places")
            if p.location in self._by_location:
                other = self._by_location[p.location].barcode
                raise InventoryCorrupt(
                    f"{p.location.kind.value} {p.location.index} holds both "
                    f"{other} and {p.barcode}"
                )
            self._by_barcode[p.barcode] = p
            self._by_location[p.location] = p

    def __iter__(self) -> Iterator[Placement]:
        return iter(sorted(self._by_location.values(), key=lambda p: p.location.sort_key))

    def __len__(self) -> int:
        return len(self._by_barcode)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Inventory) and self._by_barcode == other._by_barcode

    def __hash__(self) -> int:
        return hash(frozenset(self._by_barcode.values()))

    def __repr__(self) -> str:
        return f"Inventory({list(self)!r})"

    def at(self, loc: Location) -> Placement | None:
        return self._by_location.get(loc)

    def find(self, barcode: str) -> Placement | None:
        return self._by_barcode.get(barcode)

    def barcodes(self) -> set[str]:
        return set(self._by_barcode)

    def free(self, kind: Kind, geometry: Geometry) -> list[Location]:
        return [loc for loc in geometry.locations(kind) if loc not in self._by_location]

    # ---- changes (each returns a new inventory) ------------------------------------------

    def with_added(self, placement: Placement) -> Inventory:
        return Inventory([*self._by_barcode.values(), placement])

    def without(self, barcode: str) -> Inventory:
        return Inventory(p for b, p in self._by_barcode.items() if b != barcode)

    def with_moves(self, moves: Iterable[tuple[Location, Location]]) -> Inventory:
        """Apply moves that happen together (EXCHANGE MEDIUM is two): every source is
        read from this inventory, so a swap needs no temporary element."""
        moving = {src: dst for src, dst in moves}
        placements = []
        for p in self._by_barcode.values():
            dst = moving.get(p.location)
            if dst is None:
                placements.append(p)
            else:
                placements.append(replace(p, location=dst, source=p.location, imported=False))
        return Inventory(placements)

    # ---- persistence --------------------------------------------------------------------

    def to_json(self) -> dict[str, object]:
        return {"version": FORMAT_VERSION, "cartridges": [p.to_json() for p in self]}

    @classmethod
    def from_json(cls, raw: object) -> Inventory:
        if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
            version = raw.get("version") if isinstance(raw, dict) else None
            raise InventoryCorrupt(f"unsupported inventory format version {version!r}")
        entries = raw.get("cartridges")
        if not isinstance(entries, list):
            raise InventoryCorrupt("'cartridges' must be a list")
        try:
            return cls(Placement.from_json(e) for e in entries)
        except (ValueError, TypeError, AttributeError) as exc:
            raise InventoryCorrupt(str(exc)) from exc

    def floor(self, kind: Kind) -> tuple[int, Placement | None]:
        """The fewest elements of `kind` that keep every cartridge, and the cartridge in
        the last of them (the one to move first to shrink further); `fit` refuses less."""
        held = [p for p in self if p.location.kind == kind]
        if not held:
            return 0, None
        last = max(held, key=lambda p: p.location.index)
        return last.location.index + 1, last

    def fit(self, geometry: Geometry) -> Inventory:
        """This inventory in a library of `geometry`: ShrinkRefused if a cartridge would
        be orphaned; source elements that no longer exist are forgotten."""
        orphans = [p for p in self if p.location not in geometry]
        if orphans:
            raise ShrinkRefused(_shrink_message(orphans, geometry))
        return Inventory(
            p if p.source is None or p.source in geometry else replace(p, source=None)
            for p in self
        )


def _shrink_message(orphans: list[Placement], geometry: Geometry) -> str:
    first = orphans[0]
    loc = first.location
    key, count, what, fix = {
        Kind.SLOT: ("num_slots", geometry.slots, f"slot {loc.index + 1}", "move it first"),
        Kind.MAIL: ("num_mail_slots", geometry.mail_slots, f"mail slot {loc.index + 1}",
                    "move it first"),
        Kind.DRIVE: ("num_drives", geometry.drives, f"drive {loc.index}", "unload it first"),
    }[loc.kind]
    more = f" (and {len(orphans) - 1} more cartridges)" if len(orphans) > 1 else ""
    return f"cannot shrink {key} to {count}: {what} holds {first.barcode}; {fix}{more}"


class InventoryFile:
    """`<data_dir>/inventory.json`: read once at start, replaced atomically per change."""

    NAME = "inventory.json"

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / self.NAME

    def load(self) -> Inventory:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return Inventory()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InventoryCorrupt(f"{self.path}: not JSON ({exc})") from exc
        try:
            return Inventory.from_json(raw)
        except InventoryCorrupt as exc:
            raise InventoryCorrupt(f"{self.path}: {exc}") from exc

    def save(self, inventory: Inventory) -> None:
        atomic_write_json(self.path, inventory.to_json())

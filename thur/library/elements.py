"""Where a cartridge can be: logical locations, SMC addresses and human numbers.

Three ways to name one element, each for its own reader:

- `Location(kind, index)`: what the inventory stores. 0-based within its kind, so it
  survives a re-basing of element addresses (see identity.py).
- the SMC element address (16-bit), what initiators see in READ ELEMENT STATUS and
  send in MOVE MEDIUM; `ElementMap` translates both ways.
- the numbers people type, as `mtx status` prints them: drives are 0-based
  ("Data Transfer Element 0"), slots are 1-based and the mail slots continue the slot
  numbering after the storage slots ("Storage Element 25 IMPORT/EXPORT" in a library
  of 24 slots). `thurvtl` uses exactly these, so an admin can copy numbers between
  `mtx` and `thurvtl`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from handlers.scsi import ElementLayout, ElementRange, ElementType


class Kind(Enum):
    SLOT = "slot"
    MAIL = "mail"
    DRIVE = "drive"


_ELEMENT_TYPE = {
    Kind.SLOT: ElementType.STORAGE,
    Kind.MAIL: ElementType.IMPORT_EXPORT,
    Kind.DRIVE: ElementType.DATA_TRANSFER,
}
_KIND = {t: k for k, t in _ELEMENT_TYPE.items()}


class NoSuchElement(ValueError):
    """A human element number (or a location) outside the configured library."""


_ORDER = {Kind.DRIVE: 0, Kind.SLOT: 1, Kind.MAIL: 2}


@dataclass(frozen=True, slots=True)
class Location:
    kind: Kind
    index: int  # 0-based within its kind

    @property
    def sort_key(self) -> tuple[int, int]:
        """Drives, then slots, then mail slots: the order mtx and thurvtl list them."""
        return _ORDER[self.kind], self.index

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind.value, "index": self.index}

    @classmethod
    def from_json(cls, raw: object) -> Location:
        if not isinstance(raw, dict):
            raise ValueError(f"a location must be a mapping, not {raw!r}")
        index = raw.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"bad location index {index!r}")
        return cls(Kind(raw.get("kind")), index)


@dataclass(frozen=True, slots=True)
class Geometry:
    """How many elements of each kind the library has (from the config)."""

    slots: int
    mail_slots: int
    drives: int

    def count(self, kind: Kind) -> int:
        return {Kind.SLOT: self.slots, Kind.MAIL: self.mail_slots, Kind.DRIVE: self.drives}[kind]

    def __contains__(self, loc: object) -> bool:
        return isinstance(loc, Location) and 0 <= loc.index < self.count(loc.kind)

    def locations(self, kind: Kind) -> list[Location]:
        return [Location(kind, i) for i in range(self.count(kind))]

    # ---- human numbering (mtx's) ------------------------------------------------------

    def slot(self, number: int) -> Location:
        """mtx slot number (1-based; mail slots follow the storage slots) to a location."""
        if 1 <= number <= self.slots:
            return Location(Kind.SLOT, number - 1)
        if self.slots < number <= self.slots + self.mail_slots:
            return Location(Kind.MAIL, number - self.slots - 1)
        last = self.slots + self.mail_slots
        raise NoSuchElement(f"no slot {number}: slots are numbered 1 to {last}"
                            + (f" ({self.slots + 1} and up are mail slots)"
                               if self.mail_slots else ""))

    def mail_slot(self, number: int) -> Location:
        """1-based mail slot number to a location."""
        if not 1 <= number <= self.mail_slots:
            raise NoSuchElement(f"no mail slot {number}: the library has {self.mail_slots}")
        return Location(Kind.MAIL, number - 1)

    def drive(self, index: int) -> Location:
        if not 0 <= index < self.drives:
            raise NoSuchElement(f"no drive {index}: drives are numbered 0 to {self.drives - 1}")
        return Location(Kind.DRIVE, index)

    def number(self, loc: Location) -> int:
        """The number a person uses for `loc` (mtx slot number or drive index)."""
        if loc.kind == Kind.SLOT:
            return loc.index + 1
        if loc.kind == Kind.MAIL:
            return self.slots + loc.index + 1
        return loc.index

    def label(self, loc: Location) -> str:
        """'slot 3', 'slot 25 (mail slot 1)', 'drive 0'."""
        if loc.kind == Kind.SLOT:
            return f"slot {loc.index + 1}"
        if loc.kind == Kind.MAIL:
            return f"slot {self.number(loc)} (mail slot {loc.index + 1})"
        return f"drive {loc.index}"


@dataclass(frozen=True, slots=True)
class ElementBases:
    """First SMC element address of each range; minted once (library.json)."""

    transport: int
    data_transfer: int
    import_export: int
    storage: int

    def to_json(self) -> dict[str, int]:
        return {
            "transport": self.transport,
            "data_transfer": self.data_transfer,
            "import_export": self.import_export,
            "storage": self.storage,
        }

    @classmethod
    def from_json(cls, raw: dict[str, int]) -> ElementBases:
        return cls(int(raw["transport"]), int(raw["data_transfer"]),
                   int(raw["import_export"]), int(raw["storage"]))

    @classmethod
    def standard(cls, geometry: Geometry) -> ElementBases:
        lay = ElementLayout.standard(
            drives=geometry.drives, slots=geometry.slots, mail_slots=geometry.mail_slots
        )
        return cls(lay.transport.first, lay.data_transfer.first,
                   lay.import_export.first, lay.storage.first)

    def layout(self, geometry: Geometry) -> ElementLayout:
        """The element layout; ValueError when the ranges overlap or leave 16 bits."""
        return ElementLayout(
            ElementRange(ElementType.MEDIUM_TRANSPORT, self.transport, 1),
            ElementRange(ElementType.STORAGE, self.storage, geometry.slots),
            ElementRange(ElementType.IMPORT_EXPORT, self.import_export, geometry.mail_slots),
            ElementRange(ElementType.DATA_TRANSFER, self.data_transfer, geometry.drives),
        )


class ElementMap:
    """SMC addresses <-> locations for one geometry and one set of bases."""

    def __init__(self, geometry: Geometry, bases: ElementBases) -> None:
        self.geometry = geometry
        self.bases = bases
        self.layout = bases.layout(geometry)
        self._ranges = {
            Kind.SLOT: self.layout.storage,
            Kind.MAIL: self.layout.import_export,
            Kind.DRIVE: self.layout.data_transfer,
        }

    def address(self, loc: Location) -> int:
        if loc not in self.geometry:
            raise NoSuchElement(f"{loc.kind.value} {loc.index} is outside the library")
        return self._ranges[loc.kind].first + loc.index

    def location(self, address: int) -> Location | None:
        """The location at `address`; None for the transport or an unused address."""
        kind_type = self.layout.type_of(address)
        if kind_type is None or kind_type == ElementType.MEDIUM_TRANSPORT:
            return None
        kind = _KIND[kind_type]
        return Location(kind, address - self._ranges[kind].first)

    @staticmethod
    def element_type(kind: Kind) -> ElementType:
        return _ELEMENT_TYPE[kind]

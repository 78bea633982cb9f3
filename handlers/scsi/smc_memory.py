"""`InMemoryChanger`: a `ChangerModel` kept in memory, for engine tests (the daemon uses
the persistent thur.library.LibraryChanger).

Cartridges are barcodes; when a `media` factory is given, moving one into a drive opens it
as a `Medium` and loads the drive LU (the object is kept with the cartridge afterwards, so
moving it back out hands the same object on). Without a factory drives only record the
barcode (an empty first-cut library never loads anything).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from handlers.scsi.smc import (
    DestinationFull,
    ElementLayout,
    ElementStatus,
    ElementType,
    InvalidElement,
    InvalidRequest,
    RemovalPrevented,
    SourceEmpty,
)
from handlers.scsi.spc import DeviceIdentity
from handlers.scsi.ssc import DriveOccupied, Medium, MediumRemovalPrevented


class DriveLink(Protocol):
    """What the library needs from a drive LU (`TapeDrive` is one).

    `load` raises DriveOccupied when the drive holds a cartridge; `unload` hands the
    cartridge back (None when empty), having made it durable (the medium's `unloaded()`),
    and raises MediumRemovalPrevented while an initiator holds PREVENT MEDIUM REMOVAL.
    """

    @property
    def identity(self) -> DeviceIdentity: ...
    @property
    def medium(self) -> Medium | None: ...
    def load(self, medium: Medium) -> None: ...
    def unload(self) -> Medium | None: ...


@dataclass(slots=True)
class Cartridge:
    barcode: str
    medium: Medium | None = None
    source: int | None = None
    imported: bool = False


class InMemoryChanger:
    """A library of `slots`, `mail_slots` and the given drives, all empty to begin with."""

    def __init__(
        self,
        *,
        slots: int,
        drives: Sequence[DriveLink],
        mail_slots: int = 0,
        layout: ElementLayout | None = None,
        media: Callable[[str], Medium] | None = None,
    ) -> None:
        self._layout = layout or ElementLayout.standard(
            drives=len(drives), slots=slots, mail_slots=mail_slots
        )
        if self._layout.data_transfer.count != len(drives):
            raise ValueError("layout and drives disagree on the number of drives")
        self._drives = dict(zip(self._layout.data_transfer.addresses(), drives, strict=True))
        self._media = media
        self._contents: dict[int, Cartridge] = {}
        self._prevent = False
        self._lock = threading.Lock()

    @property
    def layout(self) -> ElementLayout:
        return self._layout

    # ---- operator side (admin API, tests) ----------------------------------------------

    def insert(self, address: int, barcode: str, *, imported: bool = False) -> None:
        """Place a cartridge into an empty slot or mail slot (operator action)."""
        with self._lock:
            kind = self._type(address)
            if kind not in (ElementType.STORAGE, ElementType.IMPORT_EXPORT):
                raise InvalidElement(address)
            if address in self._contents:
                raise DestinationFull(address)
            self._contents[address] = Cartridge(barcode, imported=imported)

    def remove(self, address: int) -> str:
        """Take a cartridge out of a mail slot (operator action); returns its barcode."""
        with self._lock:
            if self._type(address) != ElementType.IMPORT_EXPORT:
                raise InvalidElement(address)
            if address not in self._contents:
                raise SourceEmpty(address)
            return self._contents.pop(address).barcode

    # ---- ChangerModel ---------------------------------------------------------------

    def status(self, address: int) -> ElementStatus:
        with self._lock:
            kind = self._type(address)
            cart = self._contents.get(address)
            drive = self._drives.get(address)
            return ElementStatus(
                address=address,
                type=kind,
                full=cart is not None,
                barcode=cart.barcode if cart else None,
                source=cart.source if cart else None,
                imported=bool(cart and cart.imported),
                drive=drive.identity if drive else None,
            )

    def move(self, source: int, destination: int) -> None:
        with self._lock:
            self._check_movable(source)
            self._check_movable(destination)
            if source not in self._contents:
                raise SourceEmpty(source)
            if source == destination:
                return
            if destination in self._contents:
                raise DestinationFull(destination)
            self._check_export(destination)
            cart = self._take(source)
            self._put(destination, cart, source)

    def exchange(self, source: int, first: int, second: int) -> None:
        with self._lock:
            for address in (source, first, second):
                self._check_movable(address)
            if first in (source, second):
                raise InvalidRequest(first)
            if source not in self._contents:
                raise SourceEmpty(source)
            if first not in self._contents:
                raise SourceEmpty(first)
            if second != source and second in self._contents:
                raise DestinationFull(second)
            self._check_export(first)
            self._check_export(second)
            moving = self._take(source)
            displaced = self._take(first)
            self._put(first, moving, source)
            self._put(second, displaced, first)

    def initialize(self, addresses: range | None = None) -> None:
        """Nothing to scan: the in-memory inventory is always exact."""
        with self._lock:
            for address in addresses or ():
                self._type(address)

    def set_prevent_removal(self, prevent: bool) -> None:
        with self._lock:
            self._prevent = prevent

    # ---- internals ------------------------------------------------------------------

    def _type(self, address: int) -> ElementType:
        kind = self._layout.type_of(address)
        if kind is None:
            raise InvalidElement(address)
        return kind

    def _check_movable(self, address: int) -> None:
        if self._type(address) == ElementType.MEDIUM_TRANSPORT:
            raise InvalidElement(address)  # the transport is not a storage element

    def _check_export(self, destination: int) -> None:
        if self._prevent and self._type(destination) == ElementType.IMPORT_EXPORT:
            raise RemovalPrevented(destination)

    def _take(self, address: int) -> Cartridge:
        cart = self._contents[address]
        drive = self._drives.get(address)
        if drive is not None and self._media is not None:
            try:
                medium = drive.unload()
            except MediumRemovalPrevented as err:
                raise RemovalPrevented(address) from err
            cart.medium = medium or cart.medium
        return self._contents.pop(address)

    def _put(self, address: int, cart: Cartridge, came_from: int) -> None:
        drive = self._drives.get(address)
        if drive is not None and self._media is not None:
            medium = cart.medium or self._media(cart.barcode)
            try:
                drive.load(medium)
            except DriveOccupied as err:
                self._contents[came_from] = cart  # put it back where it was
                raise DestinationFull(address) from err
            cart.medium = medium
        cart.source = came_from
        cart.imported = False
        self._contents[address] = cart

"""Where the library gets cartridges from: the `CartridgeSource` door.

The library only needs to create a cartridge, open one by barcode as a `Medium` to
load it into a drive, and list/delete them. The pool-backed cartridge store
(thur/tape) implements this (directly or through a thin adapter); until it is plugged
in, `MemoryCartridgeSource` keeps `MemoryCartridge`s in RAM.

Contract:
- `create(barcode, worm=)` makes a blank cartridge; `CartridgeExists` if the barcode is
  taken. Cleaning cartridges are recognised by their `CLN` prefix.
- `open(barcode)` returns the `Medium` to load into a drive; `CartridgeNotFound` if
  there is no such cartridge; any other exception means storage trouble (the changer
  reports HARDWARE ERROR and leaves the inventory unchanged). The library opens a
  cartridge only while it is not in a drive, and keeps one handle per loaded cartridge.
- `release(barcode)`: the library is done with what `open()` returned (the cartridge
  left its drive for a slot, or its facts were read); storage may close it. The drive
  has already made it durable (`Medium.unloaded()`) when it was unloaded.
- `local_only_bytes(barcode)`: bytes written but not yet in the bucket; None when the
  storage cannot say (the memory source: it never uploads).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from thur.library.barcode import CLEANING_PREFIX
from thur.tape import LTO8_NATIVE_CAPACITY, Medium, MemoryCartridge

log = logging.getLogger(__name__)


class CartridgeNotFound(LookupError):
    """No cartridge with that barcode in storage."""


class CartridgeExists(ValueError):
    """A cartridge with that barcode already exists."""


class CartridgeSource(Protocol):
    def create(self, barcode: str, *, worm: bool = False) -> None: ...
    def open(self, barcode: str) -> Medium: ...
    def release(self, barcode: str) -> None: ...
    def exists(self, barcode: str) -> bool: ...
    def list(self) -> list[str]: ...
    def delete(self, barcode: str) -> None: ...
    def local_only_bytes(self, barcode: str) -> int | None: ...


class MemoryCartridgeSource:
    """Cartridges in RAM: for tests, and the daemon's stand-in until the pool store.

    With `blank_on_open`, opening a barcode it does not hold creates a blank cartridge
    (not WORM) instead of raising. The daemon's stand-in needs that: the inventory
    survives a restart but RAM does not, so after a restart the library still lists
    and loads its cartridges, blank. Never use it for real data.
    """

    def __init__(self, capacity_bytes: int = LTO8_NATIVE_CAPACITY, *,
                 blank_on_open: bool = False) -> None:
        self._capacity = capacity_bytes
        self._blank_on_open = blank_on_open
        self._cartridges: dict[str, MemoryCartridge] = {}
        self._lock = threading.Lock()

    def _new(self, barcode: str, worm: bool) -> MemoryCartridge:
        # A cleaning cartridge carries no data: write protected, so a drive refuses writes.
        return MemoryCartridge(barcode, self._capacity, worm=worm,
                               write_protected=barcode.startswith(CLEANING_PREFIX))

    def create(self, barcode: str, *, worm: bool = False) -> None:
        with self._lock:
            if barcode in self._cartridges:
                raise CartridgeExists(f"cartridge {barcode} already exists")
            self._cartridges[barcode] = self._new(barcode, worm)

    def open(self, barcode: str) -> Medium:
        with self._lock:
            cart = self._cartridges.get(barcode)
            if cart is None:
                if not self._blank_on_open:
                    raise CartridgeNotFound(f"no cartridge {barcode} in storage")
                log.warning("cartridge %s is not in memory (restarted?): serving it blank",
                            barcode)
                cart = self._cartridges[barcode] = self._new(barcode, False)
            return cart

    def release(self, barcode: str) -> None:
        """Nothing to close: the cartridge lives on in RAM."""

    def exists(self, barcode: str) -> bool:
        with self._lock:
            return barcode in self._cartridges

    def list(self) -> list[str]:
        with self._lock:
            return sorted(self._cartridges)

    def delete(self, barcode: str) -> None:
        with self._lock:
            if self._cartridges.pop(barcode, None) is None:
                raise CartridgeNotFound(f"no cartridge {barcode} in storage")

    def local_only_bytes(self, barcode: str) -> int | None:
        return None

"""The tape library: identity, inventory and the persistent changer model."""

from thur.library.barcode import Barcode, BarcodeError, parse_barcode
from thur.library.cartridges import (
    CartridgeExists,
    CartridgeNotFound,
    CartridgeSource,
    MemoryCartridgeSource,
)
from thur.library.changer import (
    CartridgeFacts,
    CartridgeUnavailable,
    InventoryWriteFailed,
    LibraryChanger,
    LibraryFull,
    open_library,
)
from thur.library.elements import ElementBases, ElementMap, Geometry, Kind, Location, NoSuchElement
from thur.library.identity import LibraryIdentity, geometry_of, load_or_mint
from thur.library.inventory import (
    Inventory,
    InventoryCorrupt,
    InventoryFile,
    Placement,
    ShrinkRefused,
)

__all__ = [
    "Barcode",
    "BarcodeError",
    "CartridgeExists",
    "CartridgeFacts",
    "CartridgeNotFound",
    "CartridgeSource",
    "CartridgeUnavailable",
    "ElementBases",
    "ElementMap",
    "Geometry",
    "Inventory",
    "InventoryCorrupt",
    "InventoryFile",
    "InventoryWriteFailed",
    "Kind",
    "LibraryChanger",
    "LibraryFull",
    "LibraryIdentity",
    "Location",
    "MemoryCartridgeSource",
    "NoSuchElement",
    "Placement",
    "ShrinkRefused",
    "geometry_of",
    "load_or_mint",
    "open_library",
    "parse_barcode",
]

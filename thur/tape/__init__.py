"""Tape cartridges: the `Medium` contract, its errors and implementations.

- `Medium` (contract), `MemoryCartridge` (reference, RAM), `Cartridge` (production,
  over the chunk pool) and `CartridgeStore` (cartridges by barcode under a data dir,
  replicated to the bucket).
"""

from thur.tape.cartridge import Cartridge
from thur.tape.errors import (
    BackendFailure,
    Backpressure,
    EndOfData,
    InvalidPartition,
    MediumCorrupt,
    TapeError,
    VolumeOverflow,
    WormViolation,
    WriteProtected,
)
from thur.tape.manifest import InvalidBarcode, parse_barcode
from thur.tape.medium import (
    HOST_ATTRIBUTE_FIRST,
    HOST_ATTRIBUTE_LAST,
    LTO8_DENSITY,
    LTO8_NATIVE_CAPACITY,
    MAX_PARTITIONS,
    Medium,
    SpaceResult,
    SpaceStop,
    TapePosition,
    early_warning_margin,
)
from thur.tape.memory import MemoryCartridge
from thur.tape.store import CartridgeExists, CartridgeStore, CartridgeStoreError, UnknownCartridge

__all__ = [
    "HOST_ATTRIBUTE_FIRST",
    "HOST_ATTRIBUTE_LAST",
    "LTO8_DENSITY",
    "LTO8_NATIVE_CAPACITY",
    "MAX_PARTITIONS",
    "BackendFailure",
    "Cartridge",
    "CartridgeExists",
    "CartridgeStore",
    "CartridgeStoreError",
    "Backpressure",
    "EndOfData",
    "InvalidBarcode",
    "InvalidPartition",
    "Medium",
    "MediumCorrupt",
    "MemoryCartridge",
    "SpaceResult",
    "SpaceStop",
    "TapeError",
    "TapePosition",
    "UnknownCartridge",
    "VolumeOverflow",
    "WormViolation",
    "WriteProtected",
    "early_warning_margin",
    "parse_barcode",
]

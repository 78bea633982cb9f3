"""Tape cartridges: the `Medium` contract, its errors and implementations."""

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

__all__ = [
    "HOST_ATTRIBUTE_FIRST",
    "HOST_ATTRIBUTE_LAST",
    "LTO8_DENSITY",
    "LTO8_NATIVE_CAPACITY",
    "MAX_PARTITIONS",
    "BackendFailure",
    "Backpressure",
    "EndOfData",
    "InvalidPartition",
    "Medium",
    "MediumCorrupt",
    "MemoryCartridge",
    "SpaceResult",
    "SpaceStop",
    "TapeError",
    "TapePosition",
    "VolumeOverflow",
    "WormViolation",
    "WriteProtected",
    "early_warning_margin",
]

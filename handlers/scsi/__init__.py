"""SCSI device emulations: pure command engines, one object per logical unit."""

from handlers.scsi.engine import CHECK_CONDITION, GOOD, LogicalUnit, Response
from handlers.scsi.sbc import DiskLimits, Resolver, ThinDisk, thin_disk_identity
from handlers.scsi.sense import FieldPointer, ScsiError, Sense, SenseData, SenseKey, parse_sense
from handlers.scsi.smc import (
    ChangerError,
    ChangerModel,
    DestinationFull,
    ElementLayout,
    ElementRange,
    ElementStatus,
    ElementType,
    InvalidElement,
    InvalidRequest,
    MediumChanger,
    RemovalPrevented,
    SourceEmpty,
    changer_identity,
)
from handlers.scsi.smc_memory import DriveLink, InMemoryChanger
from handlers.scsi.spc import DeviceIdentity, ScsiDevice
from handlers.scsi.ssc import (
    LTO8,
    Medium,
    TapeAlert,
    TapeDrive,
    TapeError,
    TapePosition,
    tape_drive_identity,
)

__all__ = [
    "CHECK_CONDITION",
    "GOOD",
    "LTO8",
    "ChangerError",
    "ChangerModel",
    "DestinationFull",
    "DeviceIdentity",
    "DiskLimits",
    "DriveLink",
    "ElementLayout",
    "ElementRange",
    "ElementStatus",
    "ElementType",
    "FieldPointer",
    "InMemoryChanger",
    "InvalidElement",
    "InvalidRequest",
    "LogicalUnit",
    "Medium",
    "MediumChanger",
    "RemovalPrevented",
    "Resolver",
    "Response",
    "ScsiDevice",
    "ScsiError",
    "Sense",
    "SenseData",
    "SenseKey",
    "SourceEmpty",
    "TapeAlert",
    "TapeDrive",
    "TapeError",
    "TapePosition",
    "ThinDisk",
    "changer_identity",
    "parse_sense",
    "tape_drive_identity",
    "thin_disk_identity",
]

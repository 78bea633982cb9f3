"""The state every part of the tape drive shares: cartridge, threading, block size, counters.

`TapeDriveBase` holds what the command mixins (`ssc_io`, `ssc_pages`, `ssc_mam`) and the
drive itself (`ssc.TapeDrive`) operate on, and `tape_sense()` is the ONE place where the
typed cartridge errors of `thur.tape` become SCSI sense: every `Medium` call in the drive
is wrapped in `with self.medium_errors(...)` or catches `TapeError` and re-raises through
`tape_sense()`, never building its own sense for a storage error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum

from handlers.scsi.sense import FieldPointer, ScsiError, Sense, SenseCode, SenseKey
from handlers.scsi.spc import DeviceIdentity, ScsiDevice
from thur.tape import (
    BackendFailure,
    Backpressure,
    EndOfData,
    InvalidPartition,
    Medium,
    MediumCorrupt,
    TapeError,
    VolumeOverflow,
    WormViolation,
    WriteProtected,
)

MAX_BLOCK_LENGTH = 0xFFFFFF  # 16 MiB - 1: the largest record READ/WRITE(6) can describe
MIN_BLOCK_LENGTH = 1
DENSITY_DEFAULT = 0x00
DENSITY_NO_CHANGE = 0x7F
CLEANING_PREFIX = "CLN"  # LTO barcode convention for cleaning cartridges
MB = 1_000_000
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Density:
    """One REPORT DENSITY SUPPORT descriptor's worth of facts."""

    code: int
    name: str  # 8 chars
    description: str  # 20 chars
    bits_per_mm: int
    media_width: int  # tenths of a millimetre
    tracks: int
    capacity_mb: int  # native, 10^6 bytes
    organization: str = "LTO-CVE"
    length_m: int = 960  # tape length in metres (MAM 0402h)


LTO8 = Density(0x5E, "U-832", "Ultrium 8/12T", 20670, 127, 6656, 12_000_000)


class TapeAlert(IntEnum):
    """TapeAlert flags (SSC-4 Annex A) this drive can raise."""

    READ_WARNING = 0x01
    WRITE_WARNING = 0x02
    HARD_ERROR = 0x03
    MEDIA = 0x04
    READ_FAILURE = 0x05
    WRITE_FAILURE = 0x06
    WRITE_PROTECT = 0x09
    NO_REMOVAL = 0x0A
    CLEANING_MEDIA = 0x0B
    UNSUPPORTED_FORMAT = 0x0C
    CLEAN_NOW = 0x14
    CLEAN_PERIODIC = 0x15
    EXPIRED_CLEANING_MEDIA = 0x16
    INVALID_CLEANING_TAPE = 0x17
    HARDWARE_B = 0x1F
    INTERFACE = 0x20
    WORM_OVERWRITE_ATTEMPTED = 0x3C


class DriveOccupied(Exception):
    """`load()` into a drive that already holds a cartridge."""


class MediumRemovalPrevented(Exception):
    """`unload()` while an initiator holds PREVENT MEDIUM REMOVAL."""


@dataclass(frozen=True, slots=True)
class ErrorSense:
    sense: SenseCode
    eom: bool = False
    alert: TapeAlert | None = None


# The one mapping of storage errors to sense. Subclasses of a listed error map like it;
# anything else (a TapeError we do not know) is a HARDWARE ERROR.
TAPE_ERROR_SENSE: dict[type[TapeError], ErrorSense] = {
    EndOfData: ErrorSense(Sense.BLANK_CHECK_EOD),
    VolumeOverflow: ErrorSense(Sense.VOLUME_OVERFLOW, eom=True),
    WormViolation: ErrorSense(Sense.WORM, alert=TapeAlert.WORM_OVERWRITE_ATTEMPTED),
    WriteProtected: ErrorSense(Sense.WRITE_PROTECTED, alert=TapeAlert.WRITE_PROTECT),
    InvalidPartition: ErrorSense(Sense.INVALID_FIELD_IN_CDB),
    MediumCorrupt: ErrorSense(Sense.MEDIUM_ERROR, alert=TapeAlert.READ_FAILURE),
    BackendFailure: ErrorSense(Sense.HARDWARE_ERROR, alert=TapeAlert.HARD_ERROR),
    Backpressure: ErrorSense(Sense.NOT_READY_BACKPRESSURE),
}
UNKNOWN_TAPE_ERROR = ErrorSense(Sense.HARDWARE_ERROR, alert=TapeAlert.HARD_ERROR)


def error_sense(err: TapeError) -> ErrorSense:
    for klass in type(err).__mro__:
        found = TAPE_ERROR_SENSE.get(klass)  # type: ignore[arg-type]
        if found is not None:
            return found
    return UNKNOWN_TAPE_ERROR


@dataclass(slots=True)
class DriveStats:
    """Byte counters since the last LOG SELECT reset (log pages 0Ch, 17h, 1Bh; MAM 0222h)."""

    host_written: int = 0
    host_read: int = 0
    records_written: int = 0
    records_read: int = 0
    mount_written: int = 0  # since the current cartridge was loaded
    mount_read: int = 0

    def reset(self) -> None:
        self.host_written = self.host_read = 0
        self.records_written = self.records_read = 0


class TapeDriveBase(ScsiDevice):
    """Cartridge state of an SSC drive; the command mixins build on it."""

    PERIPHERAL_TYPE = 0x01
    REMOVABLE = True

    def __init__(self, identity: DeviceIdentity, *, logger: logging.Logger | None = None):
        super().__init__(identity, logger=logger)
        self._medium: Medium | None = None
        self._threaded = False  # a cartridge can sit in the drive unthreaded (after UNLOAD)
        self.block_length = 0  # 0: variable-block mode; otherwise the fixed block size
        self.tapealerts: set[int] = set()
        self.load_count = 0  # loads into this drive (the cartridge counts its own)
        self.stats = DriveStats()
        self.cleaning_required = False

    # ---- the changer's side ----------------------------------------------------------

    @property
    def medium(self) -> Medium | None:
        return self._medium

    @property
    def ready(self) -> bool:
        return self._medium is not None and self._threaded

    @property
    def cleaning(self) -> bool:
        """A cleaning cartridge (barcode CLNxxx) is threaded."""
        m = self._medium
        return m is not None and m.barcode.upper().startswith(CLEANING_PREFIX)

    def load(self, medium: Medium) -> None:
        """A cartridge arrives (from the changer) and is threaded: 06/28/00 follows."""
        with self.lock:
            if self._medium is not None:
                raise DriveOccupied(self.identity.serial)
            self._medium = medium
            self._threaded = True
            self.load_count += 1
            self.stats.mount_written = self.stats.mount_read = 0
            self.on_load()
            if self.cleaning:
                # Cleaning is instantaneous here: the drive is clean again.
                self.cleaning_required = False
                self.tapealerts.discard(TapeAlert.CLEAN_NOW)
                self.tapealerts.discard(TapeAlert.CLEAN_PERIODIC)
            self.add_unit_attention(Sense.MEDIUM_MAY_HAVE_CHANGED)

    def unload(self) -> Medium | None:
        """Eject the cartridge for the changer (auto-unload); refused while prevented.

        A threaded cartridge is flushed first (`Medium.unloaded()`); a storage failure
        propagates as the `TapeError` and the cartridge stays in the drive.
        """
        with self.lock:
            if self._medium is None:
                return None
            if self.prevent_removal:
                raise MediumRemovalPrevented(self.identity.serial)
            if self._threaded:
                self._medium.unloaded()
            medium, self._medium, self._threaded = self._medium, None, False
            self.on_unload()
            return medium

    def request_cleaning(self) -> None:
        """Operator/test hook: the drive wants a cleaning cartridge (TapeAlert 14h)."""
        with self.lock:
            self.cleaning_required = True
            self.tapealerts.add(TapeAlert.CLEAN_NOW)

    def on_load(self) -> None:
        """Hook for mixins: a cartridge was threaded."""

    def on_unload(self) -> None:
        """Hook for mixins: the cartridge left the drive."""

    def seal_record(self, record: bytes) -> tuple[bytes, bool]:
        """Hook for the encryption mixin (ssc_crypto): the bytes to store for a host
        record, and whether they are sealed (`Medium.write(..., encrypted=)`)."""
        return record, False

    def open_record(self, record: bytes, encrypted: bool, *, info: int, data: bytes) -> bytes:
        """Hook for the encryption mixin: the host's bytes of a record read from the
        cartridge, or a ScsiError (with `info` and the short `data`) when it cannot be."""
        return record

    # ---- readiness -------------------------------------------------------------------

    def check_ready(self) -> None:
        if not self.ready:
            raise ScsiError(Sense.MEDIUM_NOT_PRESENT)
        if self.cleaning:
            raise ScsiError(Sense.CLEANING_CARTRIDGE_INSTALLED)

    def _loaded(self) -> Medium:
        """The threaded data cartridge, or the NOT READY condition."""
        self.check_ready()
        assert self._medium is not None
        return self._medium

    # ---- the one mapping of storage errors to sense ----------------------------------

    def tape_sense(
        self,
        err: TapeError,
        *,
        info: int | None = None,
        data: bytes = b"",
        field: FieldPointer | None = None,
    ) -> ScsiError:
        """The ScsiError that reports `err` (with a residue and short data when given)."""
        mapped = error_sense(err)
        if mapped.alert is not None:
            self.tapealerts.add(mapped.alert)
        if mapped.sense == Sense.HARDWARE_ERROR:
            self.log.error("cartridge failure: %s", err)
        if mapped.sense.key != SenseKey.ILLEGAL_REQUEST:
            field = None  # a field pointer only means something for ILLEGAL REQUEST
        return ScsiError(mapped.sense, info=info, eom=mapped.eom, data=data, field=field)

    @contextmanager
    def medium_errors(self, *, info: int | None = None,
                      field: FieldPointer | None = None) -> Iterator[None]:
        """Run a block of `Medium` calls, reporting storage errors through `tape_sense`."""
        try:
            yield
        except TapeError as err:
            raise self.tape_sense(err, info=info, field=field) from err

"""`TapeDrive`: an SSC-4 LTO-8 drive (peripheral type 01h) serving a `Medium` when loaded.

First cut: the drive answers everything the Linux st driver and `mt status` need with no
cartridge, and the changer can `load()`/`unload()` a cartridge (the drive then reports
06/28/00). Data-path commands (READ/WRITE/SPACE/LOCATE/...) are registered as medium-gated
placeholders: NOT READY 3A/00 without a cartridge, INVALID OPCODE with one, and not
advertised by REPORT SUPPORTED OPERATION CODES until they are implemented on `Medium`.

Identity: vendor THUR, product "Ultrium 8-SCSI". With our own vendor id no vendor-specific
driver will claim the drive anyway; the product string says what the drive is (an LTO-8,
SCSI-attached) the way generic LTO detection looks for it ("Ultrium 8"), rather than
"ULTRIUM-HH8", whose half-height claim is physical and meaningless here. It must never change:
backup software keys drive types on vendor + product.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, runtime_checkable

from handlers.scsi.logpages import LogPage, LogParam, counter, tapealert_page
from handlers.scsi.modepages import BlockDescriptor, ModePage, page, sense_field
from handlers.scsi.opcodes import Op
from handlers.scsi.sense import ScsiError, Sense, SenseCode
from handlers.scsi.spc import DataOut, DeviceIdentity, ScsiDevice, allocation, command, usage

TAPE_VENDOR = "THUR"
TAPE_PRODUCT = "Ultrium 8-SCSI"
TAPE_REVISION = "0100"

MAX_BLOCK_LENGTH = 0xFFFFFF  # 16 MiB - 1: the largest record READ/WRITE(6) can describe
MIN_BLOCK_LENGTH = 1
DENSITY_DEFAULT = 0x00
DENSITY_NO_CHANGE = 0x7F


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


LTO8 = Density(0x5E, "U-832", "Ultrium 8/12T", 20670, 127, 6656, 12_000_000)

DENSITY_DESCRIPTOR = struct.Struct(">BBBH3sHHI8s8s20s")
"""REPORT DENSITY SUPPORT density descriptor, 52 bytes (SSC-4 6.20.2): primary and
secondary code, WRTOK/DUP/DEFLT/DLV, descriptor length, bits per mm, media width, tracks,
capacity (MB), assigning organization, density name, description."""

BLOCK_LIMITS = struct.Struct(">B3sH")
"""READ BLOCK LIMITS data: granularity, maximum block length, minimum block length."""

SHORT_POSITION = struct.Struct(">BBxxIIxBBBI")
"""READ POSITION short form, 20 bytes: flags, partition, first and last object location,
reserved, objects in buffer (24-bit, split), bytes in buffer."""

LONG_POSITION = struct.Struct(">BxxxIQQQ")
"""READ POSITION long form, 32 bytes: flags, partition, object number, file id, set id."""

EXTENDED_POSITION = struct.Struct(">BBHx3sQQQ")
"""READ POSITION extended form, 32 bytes: flags, partition, add'l length 1Ch, objects in
buffer, first location, last location, bytes in buffer."""


class TapeAlert(IntEnum):
    """TapeAlert flags a drive may raise (the ones this drive can report)."""

    READ_WARNING = 1
    WRITE_WARNING = 2
    HARD_ERROR = 3
    MEDIA = 4
    READ_FAILURE = 5
    WRITE_FAILURE = 6
    WRITE_PROTECT = 9
    NO_REMOVAL = 10
    UNSUPPORTED_FORMAT = 12
    HARDWARE_B = 31
    INTERFACE = 32


@dataclass(frozen=True, slots=True)
class TapePosition:
    """Where the medium is: logical object number within a partition, file number."""

    partition: int = 0
    object_id: int = 0
    file_id: int = 0
    bop: bool = True  # beginning of partition
    eop: bool = False  # at or past the end of partition
    bpew: bool = False  # beyond programmable early warning


@runtime_checkable
class Medium(Protocol):
    """A loaded cartridge, as the storage layer (thur/tape) presents it to the drive.

    Records and filemarks are numbered logical objects; writing anywhere but at end of data
    truncates what follows (WORM excepted). Errors are raised as `TapeError` subclasses.
    Only the first group is used by this first cut; the rest is the issue-4 contract.
    """

    @property
    def barcode(self) -> str: ...
    @property
    def density_code(self) -> int: ...
    @property
    def capacity_bytes(self) -> int: ...
    @property
    def write_protected(self) -> bool: ...
    @property
    def worm(self) -> bool: ...
    def position(self) -> TapePosition: ...
    def rewind(self) -> None: ...
    def seek_eod(self) -> None: ...

    # ---- issue 4: the data path --------------------------------------------------
    def partitions(self) -> int: ...
    def locate(self, partition: int, object_id: int) -> None: ...
    def read(self, max_length: int) -> bytes | None:
        """The next record (possibly longer than max_length: the caller truncates), or None
        at a filemark (then positioned after it); raises EndOfData at EOD."""
        ...

    def write(self, record: bytes) -> bool:
        """Append a record at the current position; True once past early warning."""
        ...

    def write_filemarks(self, count: int) -> bool: ...
    def space(self, what: int, count: int) -> int:
        """SPACE by blocks (0), filemarks (1) or to EOD (3); returns the count not done."""
        ...

    def erase(self, long: bool) -> None: ...


class TapeError(Exception):
    """Failures the storage layer raises; `sense` is how the drive reports them."""

    sense: SenseCode = Sense.HARDWARE_ERROR


class EndOfData(TapeError):
    sense = Sense.EOD


class MediumCorrupt(TapeError):
    sense = Sense.MEDIUM_ERROR


class WriteProtected(TapeError):
    sense = Sense.WRITE_PROTECTED


class WormViolation(TapeError):
    sense = Sense.WORM


class BackendFailure(TapeError):
    sense = Sense.HARDWARE_ERROR


class Backpressure(TapeError):
    sense = Sense.NOT_READY_BACKPRESSURE


class DriveOccupied(Exception):
    """`load()` into a drive that already holds a cartridge."""


class MediumRemovalPrevented(Exception):
    """`unload()` while an initiator holds PREVENT MEDIUM REMOVAL."""


def _placeholder(self: TapeDrive, cdb: bytes, data_out: DataOut) -> None:
    # Reached only with a cartridge loaded (needs_medium gates the empty drive).
    raise ScsiError(Sense.INVALID_OPCODE)


for _op, _usage, _out in (
    (Op.READ_6, usage(0x08, 0x03, 0xFF, 0xFF, 0xFF), False),
    (Op.WRITE_6, usage(0x0A, 0x01, 0xFF, 0xFF, 0xFF), True),
    (Op.SET_CAPACITY, usage(0x0B, 0x01, 0, 0xFF, 0xFF), False),
    (Op.WRITE_FILEMARKS_6, usage(0x10, 0x03, 0xFF, 0xFF, 0xFF), False),
    (Op.SPACE_6, usage(0x11, 0x0F, 0xFF, 0xFF, 0xFF), False),
    (Op.VERIFY_6, usage(0x13, 0x07, 0xFF, 0xFF, 0xFF), False),
    (Op.ERASE_6, usage(0x19, 0x03, 0, 0, 0), False),
    (Op.LOCATE_10, usage(0x2B, 0x07, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF), False),
    (Op.WRITE_FILEMARKS_16, usage(0x80, 0x03, *([0xFF] * 13)), False),
    (Op.ALLOW_OVERWRITE, usage(0x82, 0, 0x0F, 0x0F, *([0xFF] * 8), 0, 0, 0), False),
    (Op.READ_ATTRIBUTE, usage(0x8C, 0x1F, 0, 0, 0, *([0xFF] * 9), 0x01), False),
    (Op.WRITE_ATTRIBUTE, usage(0x8D, 0x01, 0, 0, 0, *([0xFF] * 9), 0), True),
    (Op.SPACE_16, usage(0x91, 0x0F, *([0xFF] * 13)), False),
    (Op.LOCATE_16, usage(0x92, 0x1F, 0x03, 0xFF, *([0xFF] * 11)), False),
):
    command(_op, _usage, data_out=_out, needs_medium=True, listed=False)(_placeholder)
del _op, _usage, _out


class TapeDrive(ScsiDevice):
    """An LTO-8 tape drive logical unit."""

    PERIPHERAL_TYPE = 0x01
    REMOVABLE = True
    TAPEALERT_SUPPORTED = frozenset(TapeAlert)

    def __init__(self, identity: DeviceIdentity, *, logger: logging.Logger | None = None):
        super().__init__(identity, logger=logger)
        self._medium: Medium | None = None
        self._threaded = False  # a cartridge can sit in the drive unloaded (after UNLOAD)
        self.block_length = 0  # 0: variable-block mode; otherwise the fixed block size
        self.tapealerts: set[int] = set()
        self.load_count = 0
        self.stats = {"host_bytes_written": 0, "medium_bytes_written": 0,
                      "medium_bytes_read": 0, "host_bytes_read": 0}
        self.vpd_pages.update({
            0xB0: lambda: bytes([0x01, 0x00]),  # WORM: the drive supports WORM media
            0xB1: lambda: self.identity.serial.encode(),  # manufacturer-assigned serial
            0xB2: self._vpd_tapealert_supported,
        })
        self._register_mode_pages()
        self.logs.add(LogPage(0x0C, self._log_sequential_access, reset=self._reset_stats))
        self.logs.add(LogPage(0x17, self._log_volume_statistics))
        self.logs.add(LogPage(0x2E, tapealert_page(lambda: self.tapealerts),
                              after_read=self.tapealerts.clear))

    # ---- the changer's side ----------------------------------------------------------

    @property
    def medium(self) -> Medium | None:
        return self._medium

    @property
    def ready(self) -> bool:
        return self._medium is not None and self._threaded

    def load(self, medium: Medium) -> None:
        """A cartridge arrives (from the changer) and is threaded: 06/28/00 follows."""
        with self.lock:
            if self._medium is not None:
                raise DriveOccupied(self.identity.serial)
            self._medium = medium
            self._threaded = True
            self.load_count += 1
            self.add_unit_attention(Sense.MEDIUM_MAY_HAVE_CHANGED)

    def unload(self) -> Medium | None:
        """Eject the cartridge for the changer (auto-unload); refused while prevented."""
        with self.lock:
            if self._medium is None:
                return None
            if self.prevent_removal:
                raise MediumRemovalPrevented(self.identity.serial)
            medium, self._medium, self._threaded = self._medium, None, False
            return medium

    # ---- helpers -------------------------------------------------------------------

    def check_ready(self) -> None:
        if not self.ready:
            raise ScsiError(Sense.MEDIUM_NOT_PRESENT)

    def _loaded(self) -> Medium:
        self.check_ready()
        assert self._medium is not None
        return self._medium

    def _call(self, action: Callable[[], object]) -> object:
        """Run a Medium operation, mapping storage errors to sense in one place."""
        try:
            return action()
        except TapeError as err:
            raise ScsiError(err.sense) from err

    def _vpd_tapealert_supported(self) -> bytes:
        mask = 0
        for flag in self.TAPEALERT_SUPPORTED:
            mask |= 1 << (64 - int(flag))  # flag 1 is the most significant bit
        return bytes(4) + mask.to_bytes(8, "big")

    # ---- mode pages ----------------------------------------------------------------

    def _register_mode_pages(self) -> None:
        m = self.modes
        m.block_descriptors = self._block_descriptors
        m.check_block_descriptor = self._check_block_descriptor
        m.apply_block_descriptor = self._apply_block_descriptor
        m.device_specific = self._device_specific
        # 0Fh data compression: DCE (on) and DDE changeable; algorithm 01h both ways.
        m.add(ModePage(0x0F, page(0x0F, 16, {2: 0xC0, 3: 0x80, 7: 0x01, 11: 0x01}),
                       changeable=page(0x0F, 16, {2: 0x80})))
        # 10h device configuration: LOIS (object ids supported), EEG + SEW, compression 1.
        m.add(ModePage(0x10, page(0x10, 16, {8: 0x40, 10: 0x18, 14: 0x01}),
                       changeable=page(0x10, 16, {14: 0xFF}),
                       validator=self._check_select_compression))
        # 10h/01h device configuration extension: programmable early warning changeable.
        m.add(ModePage(0x10, page(0x10, 32, subpage=0x01), subpage=0x01,
                       changeable=page(0x10, 32, {6: 0xFF, 7: 0xFF}, subpage=0x01)))
        # 11h medium partition: 1 additional partition possible; staged for FORMAT MEDIUM.
        m.add(ModePage(0x11, page(0x11, 12, {2: 0x01, 5: 0x03, 6: 0x09}),
                       changeable=page(0x11, 12, {3: 0x01, 4: 0xF8, 6: 0x0F, 8: 0xFF,
                                                  9: 0xFF, 10: 0xFF, 11: 0xFF}),
                       validator=self._check_partition_page))

    @staticmethod
    def _check_select_compression(new: bytes) -> None:
        if new[14] > 1:
            raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST, field=sense_field(14, 7))

    @staticmethod
    def _check_partition_page(new: bytes) -> None:
        if new[3] > new[2]:
            raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST, field=sense_field(3, 7))

    def _block_descriptors(self) -> list[BlockDescriptor]:
        # With no cartridge, density 0: st shows "Density code 0x0 (default)" like real
        # drives without media; loaded, the medium's density (5Eh for LTO-8).
        density = self._medium.density_code if self.ready and self._medium else DENSITY_DEFAULT
        return [BlockDescriptor(density, 0, self.block_length)]

    def _check_block_descriptor(self, d: BlockDescriptor) -> None:
        if d.density not in (DENSITY_DEFAULT, DENSITY_NO_CHANGE, LTO8.code):
            raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST, field=sense_field(0, 7))
        if d.block_length > MAX_BLOCK_LENGTH:
            raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST, field=sense_field(5, 7))

    def _apply_block_descriptor(self, d: BlockDescriptor) -> None:
        self.block_length = d.block_length  # 0 selects variable-block mode

    def _device_specific(self) -> int:
        wp = 0x80 if self.ready and self._medium and self._medium.write_protected else 0
        return wp | 0x10  # buffered mode 1: GOOD may precede the write reaching the pool

    # ---- log pages -----------------------------------------------------------------

    def _log_sequential_access(self) -> list[LogParam]:
        s = self.stats
        return [
            counter(0x0000, s["host_bytes_written"]),
            counter(0x0001, s["medium_bytes_written"]),
            counter(0x0002, s["medium_bytes_read"]),
            counter(0x0003, s["host_bytes_read"]),
            LogParam(0x0100, b"\x00"),  # cleaning required: never
        ]

    def _reset_stats(self) -> None:
        for key in self.stats:
            self.stats[key] = 0

    def _log_volume_statistics(self) -> list[LogParam]:
        return [
            LogParam(0x0000, b"\x01" if self.ready else b"\x00"),  # page valid
            counter(0x0001, self.load_count, 4),  # thread count
        ]

    # ---- commands ------------------------------------------------------------------

    @command(Op.REWIND, usage(0x01, 0x01, 0, 0, 0), needs_medium=True)
    def rewind(self, cdb: bytes, data_out: DataOut) -> None:
        self._call(self._loaded().rewind)

    @command(Op.READ_BLOCK_LIMITS, usage(0x05, 0, 0, 0, 0))
    def read_block_limits(self, cdb: bytes, data_out: DataOut) -> bytes:
        if cdb[1] & 0x01:  # MLOC: maximum logical object identifier is not reported
            raise ScsiError.cdb(1, 0)
        return BLOCK_LIMITS.pack(0, MAX_BLOCK_LENGTH.to_bytes(3, "big"), MIN_BLOCK_LENGTH)

    @command(Op.LOAD_UNLOAD, usage(0x1B, 0x01, 0, 0, 0x0F))
    def load_unload(self, cdb: bytes, data_out: DataOut) -> None:
        if self._medium is None:
            raise ScsiError(Sense.MEDIUM_NOT_PRESENT)
        load, eot = bool(cdb[4] & 0x01), bool(cdb[4] & 0x04)
        if load:
            if eot:
                self._call(self._medium.seek_eod)
            else:
                self._call(self._medium.rewind)
            self._threaded = True
            return
        if self.prevent_removal:
            raise ScsiError(Sense.REMOVAL_PREVENTED)
        if self._threaded:
            self._call(self._medium.rewind)
        self._threaded = False  # the cartridge waits in the drive for the changer

    @command(Op.READ_POSITION, usage(0x34, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF), needs_medium=True)
    def read_position(self, cdb: bytes, data_out: DataOut) -> bytes:
        form = cdb[1] & 0x1F
        pos = self._call(self._loaded().position)
        assert isinstance(pos, TapePosition)
        flags = (0x80 if pos.bop else 0) | (0x40 if pos.eop else 0) | (0x01 if pos.bpew else 0)
        if form in (0x00, 0x01):  # short form; 01h (vendor-specific ids) = block ids here
            obj = min(pos.object_id, 0xFFFFFFFF)
            return SHORT_POSITION.pack(flags, pos.partition & 0xFF, obj, obj, 0, 0, 0, 0)
        if form == 0x06:
            return LONG_POSITION.pack(flags, pos.partition, pos.object_id, pos.file_id, 0)
        if form == 0x08:
            data = EXTENDED_POSITION.pack(flags, pos.partition & 0xFF, 0x1C, bytes(3),
                                          pos.object_id, pos.object_id, 0)
            return allocation(data, struct.unpack_from(">H", cdb, 7)[0])
        raise ScsiError.cdb(1, 4)

    @command(Op.REPORT_DENSITY_SUPPORT, usage(0x44, 0x03, 0, 0, 0, 0, 0, 0xFF, 0xFF))
    def report_density_support(self, cdb: bytes, data_out: DataOut) -> bytes:
        if cdb[1] & 0x02:  # MEDIUM TYPE form is not supported (yet)
            raise ScsiError.cdb(1, 1)
        writable = True
        if cdb[1] & 0x01:  # MEDIA: what the mounted cartridge holds
            medium = self._loaded()
            density = Density(**{**_density_fields(LTO8),
                                 "code": medium.density_code,
                                 "capacity_mb": medium.capacity_bytes // 1_000_000})
            writable = not medium.write_protected
        else:
            density = LTO8
        desc = DENSITY_DESCRIPTOR.pack(
            density.code, density.code, (0x80 if writable else 0) | 0x20 | 0x01,
            DENSITY_DESCRIPTOR.size - 3, density.bits_per_mm.to_bytes(3, "big"),
            density.media_width, density.tracks, density.capacity_mb,
            density.organization.encode().ljust(8), density.name.encode().ljust(8),
            density.description.encode().ljust(20),
        )
        data = struct.pack(">Hxx", len(desc) + 2) + desc
        return allocation(data, struct.unpack_from(">H", cdb, 7)[0])

    # Medium-gated placeholders for the issue-4 data path (see the module docstring).
    data_path_placeholder = command(Op.FORMAT_MEDIUM, usage(0x04, 0x03, 0x0F, 0xFF, 0xFF),
                                    data_out=True, needs_medium=True, listed=False)(
        _placeholder)


def _density_fields(d: Density) -> dict[str, object]:
    return {f: getattr(d, f) for f in Density.__dataclass_fields__}


def tape_drive_identity(serial: str, *, revision: str = TAPE_REVISION) -> DeviceIdentity:
    """The identity every Thur drive presents; only the serial differs between drives."""
    return DeviceIdentity(TAPE_VENDOR, TAPE_PRODUCT, revision, serial)


__all__ = [
    "LTO8", "BackendFailure", "Backpressure", "Density", "DriveOccupied", "EndOfData",
    "Medium", "MediumCorrupt", "MediumRemovalPrevented", "TapeAlert",
    "TapeDrive", "TapeError", "TapePosition", "WormViolation", "WriteProtected",
    "tape_drive_identity",
]

"""Sense data: named conditions, fixed (70h) and descriptor (72h) encodings, `ScsiError`.

Command methods never build sense bytes themselves: they raise `ScsiError(Sense.X, ...)`
and the dispatcher in `spc.ScsiDevice.execute` turns it into CHECK CONDITION in one place,
choosing the format from the control mode page (D_SENSE).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import NamedTuple


class SenseKey(IntEnum):
    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE


class SenseCode(NamedTuple):
    key: SenseKey
    asc: int
    ascq: int


class Sense(SenseCode, Enum):
    """Named sense conditions (key / ASC / ASCQ). Equal triples are aliases."""

    NO_SENSE = SenseCode(SenseKey.NO_SENSE, 0x00, 0x00)
    # Tape position conditions: NO SENSE plus FILEMARK/EOM bits in the sense data.
    FILEMARK = SenseCode(SenseKey.NO_SENSE, 0x00, 0x01)
    EARLY_WARNING = SenseCode(SenseKey.NO_SENSE, 0x00, 0x02)
    BOP = SenseCode(SenseKey.NO_SENSE, 0x00, 0x04)
    EOD = SenseCode(SenseKey.BLANK_CHECK, 0x00, 0x05)
    BLANK_CHECK_EOD = SenseCode(SenseKey.BLANK_CHECK, 0x00, 0x05)
    VOLUME_OVERFLOW = SenseCode(SenseKey.VOLUME_OVERFLOW, 0x00, 0x02)
    # NOT READY
    BECOMING_READY = SenseCode(SenseKey.NOT_READY, 0x04, 0x01)
    NOT_READY_BACKPRESSURE = SenseCode(SenseKey.NOT_READY, 0x04, 0x07)
    INITIALIZING_COMMAND_REQUIRED = SenseCode(SenseKey.NOT_READY, 0x04, 0x02)
    MEDIUM_NOT_PRESENT = SenseCode(SenseKey.NOT_READY, 0x3A, 0x00)
    CLEANING_CARTRIDGE_INSTALLED = SenseCode(SenseKey.NOT_READY, 0x30, 0x03)
    # MEDIUM / HARDWARE
    MEDIUM_ERROR = SenseCode(SenseKey.MEDIUM_ERROR, 0x11, 0x00)
    HARDWARE_ERROR = SenseCode(SenseKey.HARDWARE_ERROR, 0x44, 0x00)
    # ILLEGAL REQUEST
    INVALID_FIELD_IN_INFORMATION_UNIT = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x0E, 0x03)
    PARAMETER_LIST_LENGTH_ERROR = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x1A, 0x00)
    INVALID_OPCODE = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x20, 0x00)
    LBA_OUT_OF_RANGE = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x21, 0x00)
    INVALID_ELEMENT = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x21, 0x01)
    INVALID_FIELD_IN_CDB = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00)
    INVALID_FIELD_IN_PARAM_LIST = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x26, 0x00)
    PARAMETER_VALUE_INVALID = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x26, 0x02)
    TOO_MANY_TARGET_DESCRIPTORS = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x26, 0x06)
    UNSUPPORTED_TARGET_DESCRIPTOR_TYPE = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x26, 0x07)
    TOO_MANY_SEGMENT_DESCRIPTORS = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x26, 0x08)
    UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x26, 0x09)
    SAVING_PARAMETERS_NOT_SUPPORTED = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x39, 0x00)
    POSITION_PAST_BOM = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0C)
    DESTINATION_FULL = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0D)
    SOURCE_EMPTY = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0E)
    REMOVAL_PREVENTED = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)
    AUX_MEMORY_OUT_OF_SPACE = SenseCode(SenseKey.ILLEGAL_REQUEST, 0x55, 0x06)
    # UNIT ATTENTION
    MEDIUM_MAY_HAVE_CHANGED = SenseCode(SenseKey.UNIT_ATTENTION, 0x28, 0x00)
    POWER_ON_RESET = SenseCode(SenseKey.UNIT_ATTENTION, 0x29, 0x00)
    MODE_PARAMETERS_CHANGED = SenseCode(SenseKey.UNIT_ATTENTION, 0x2A, 0x01)
    CAPACITY_CHANGED = SenseCode(SenseKey.UNIT_ATTENTION, 0x2A, 0x09)
    # DATA PROTECT
    WRITE_PROTECTED = SenseCode(SenseKey.DATA_PROTECT, 0x27, 0x00)
    WORM = SenseCode(SenseKey.DATA_PROTECT, 0x30, 0x0C)
    # COPY ABORTED (EXTENDED COPY)
    UNREACHABLE_COPY_TARGET = SenseCode(SenseKey.COPY_ABORTED, 0x08, 0x04)
    COPY_TARGET_NOT_REACHABLE = SenseCode(SenseKey.COPY_ABORTED, 0x0D, 0x02)
    INCORRECT_COPY_TARGET_TYPE = SenseCode(SenseKey.COPY_ABORTED, 0x0D, 0x03)
    # MISCOMPARE
    MISCOMPARE = SenseCode(SenseKey.MISCOMPARE, 0x1D, 0x00)


@dataclass(frozen=True, slots=True)
class FieldPointer:
    """Sense-key-specific field pointer for ILLEGAL REQUEST (SPC-4 4.5.2.4.2).

    `in_cdb` is C/D: True for a CDB field, False for a parameter-list field.
    `bit` is the most significant bit of the field, or None when not meaningful.
    """

    byte: int
    bit: int | None = None
    in_cdb: bool = True

    def encode(self) -> bytes:
        flags = 0x80 | (0x40 if self.in_cdb else 0)  # SKSV | C/D
        if self.bit is not None:
            flags |= 0x08 | (self.bit & 0x07)  # BPV | bit pointer
        return bytes([flags]) + struct.pack(">H", self.byte & 0xFFFF)

    def shifted(self, offset: int) -> FieldPointer:
        """The same pointer moved by `offset` bytes (page-relative -> list-relative)."""
        return FieldPointer(self.byte + offset, self.bit, self.in_cdb)


FIXED_SENSE = struct.Struct(">BBBIBIBBB3s")
"""Fixed-format sense data, 18 bytes (SPC-4 4.5.3).

0 response code 70h (VALID bit 7) | 1 obsolete | 2 FILEMARK(7) EOM(6) ILI(5) sense key |
3-6 INFORMATION | 7 additional length (10) | 8-11 command-specific information |
12 ASC | 13 ASCQ | 14 FRU code | 15-17 sense-key-specific (SKSV in bit 7 of byte 15).
"""
FIXED_SENSE_LEN = FIXED_SENSE.size

DESCRIPTOR_HEADER = struct.Struct(">BBBB3xB")
"""Descriptor-format sense header, 8 bytes: 72h, key, ASC, ASCQ, 3 reserved, add'l length."""

INFORMATION_DESCRIPTOR = struct.Struct(">BBBxQ")
"""Information sense descriptor (type 00h): type, add'l length 0Ah, VALID 80h, rsvd, u64."""

SKS_DESCRIPTOR = struct.Struct(">BBxx3sx")
"""Sense-key-specific descriptor (type 02h): type, add'l length 06h, rsvd x2, SKS(3), rsvd."""

STREAM_DESCRIPTOR = struct.Struct(">BBxB")
"""Stream commands descriptor (type 04h): type, add'l length 02h, rsvd, FILEMARK/EOM/ILI."""


@dataclass(frozen=True, slots=True)
class SenseData:
    """A decoded (or to-be-encoded) sense record, format-independent."""

    code: SenseCode
    info: int | None = None
    filemark: bool = False
    eom: bool = False
    ili: bool = False
    field: FieldPointer | None = None
    sks: bytes | None = None  # raw sense-key-specific bytes when not a field pointer

    def _sks_bytes(self) -> bytes | None:
        if self.field is not None:
            return self.field.encode()
        return self.sks

    def fixed(self) -> bytes:
        # INFORMATION is 4 bytes in fixed format; tape residues are signed 32-bit.
        info = self.info
        valid = info is not None and -(1 << 31) <= info < (1 << 32)
        flags = (0x80 if self.filemark else 0) | (0x40 if self.eom else 0)
        flags |= (0x20 if self.ili else 0) | (int(self.code.key) & 0x0F)
        return FIXED_SENSE.pack(
            0xF0 if valid else 0x70,
            0,
            flags,
            (info & 0xFFFFFFFF) if valid and info is not None else 0,
            FIXED_SENSE_LEN - 8,
            0,
            self.code.asc,
            self.code.ascq,
            0,
            self._sks_bytes() or bytes(3),
        )

    def descriptor(self) -> bytes:
        body = bytearray()
        if self.info is not None:
            body += INFORMATION_DESCRIPTOR.pack(0x00, 0x0A, 0x80, self.info & (2**64 - 1))
        sks = self._sks_bytes()
        if sks is not None:
            body += SKS_DESCRIPTOR.pack(0x02, 0x06, sks)
        if self.filemark or self.eom or self.ili:
            bits = (0x80 if self.filemark else 0) | (0x40 if self.eom else 0)
            body += STREAM_DESCRIPTOR.pack(0x04, 0x02, bits | (0x20 if self.ili else 0))
        head = DESCRIPTOR_HEADER.pack(
            0x72, int(self.code.key) & 0x0F, self.code.asc, self.code.ascq, len(body)
        )
        return head + bytes(body)

    def encode(self, descriptor: bool = False) -> bytes:
        return self.descriptor() if descriptor else self.fixed()


def parse_sense(raw: bytes) -> SenseData:
    """Decode fixed (70h/71h) or descriptor (72h/73h) sense; ValueError when malformed."""
    if len(raw) < 8:
        raise ValueError("sense shorter than 8 bytes")
    response = raw[0] & 0x7F
    if response in (0x70, 0x71):
        if len(raw) < FIXED_SENSE_LEN:
            raise ValueError("fixed sense shorter than 18 bytes")
        f = FIXED_SENSE.unpack_from(raw)
        info = f[3] if raw[0] & 0x80 else None
        sks = f[9]
        field = None
        if sks[0] & 0x80 and SenseKey(f[2] & 0x0F) == SenseKey.ILLEGAL_REQUEST:
            bit = sks[0] & 0x07 if sks[0] & 0x08 else None
            field = FieldPointer(int.from_bytes(sks[1:3], "big"), bit, bool(sks[0] & 0x40))
        return SenseData(
            SenseCode(SenseKey(f[2] & 0x0F), f[6], f[7]),
            info=info,
            filemark=bool(f[2] & 0x80),
            eom=bool(f[2] & 0x40),
            ili=bool(f[2] & 0x20),
            field=field,
            sks=None if field else (sks if sks[0] & 0x80 else None),
        )
    if response in (0x72, 0x73):
        key, asc, ascq = raw[1] & 0x0F, raw[2], raw[3]
        end = 8 + raw[7]
        if len(raw) < end:
            raise ValueError("descriptor sense truncated")
        info, fm, eom, ili, field, pos = None, False, False, False, None, 8
        while pos + 2 <= end:
            dtype, dlen = raw[pos], raw[pos + 1]
            if pos + 2 + dlen > end:
                raise ValueError("sense descriptor overruns the additional length")
            desc = raw[pos : pos + 2 + dlen]
            if dtype == 0x00 and dlen >= 0x0A and desc[2] & 0x80:
                info = int.from_bytes(desc[4:12], "big")
            elif dtype == 0x02 and dlen >= 0x06 and desc[4] & 0x80:
                bit = desc[4] & 0x07 if desc[4] & 0x08 else None
                field = FieldPointer(int.from_bytes(desc[5:7], "big"), bit, bool(desc[4] & 0x40))
            elif dtype == 0x04 and dlen >= 0x02:
                fm, eom, ili = bool(desc[3] & 0x80), bool(desc[3] & 0x40), bool(desc[3] & 0x20)
            pos += 2 + dlen
        return SenseData(
            SenseCode(SenseKey(key), asc, ascq),
            info=info, filemark=fm, eom=eom, ili=ili, field=field,
        )
    raise ValueError(f"unknown sense response code {raw[0]:#04x}")


class ScsiError(Exception):
    """Raised by command methods; the dispatcher answers CHECK CONDITION with this sense.

    `data` is optional data-in returned alongside the CHECK CONDITION (tape short reads).
    """

    def __init__(
        self,
        sense: SenseCode,
        *,
        info: int | None = None,
        field: FieldPointer | None = None,
        filemark: bool = False,
        eom: bool = False,
        ili: bool = False,
        data: bytes = b"",
    ) -> None:
        super().__init__(f"{getattr(sense, 'name', sense)}")
        self.sense_data = SenseData(
            sense, info=info, filemark=filemark, eom=eom, ili=ili, field=field
        )
        self.data = data

    @classmethod
    def cdb(cls, byte: int, bit: int | None = None) -> ScsiError:
        """INVALID FIELD IN CDB pointing at `byte` (and `bit`, the field's top bit)."""
        return cls(Sense.INVALID_FIELD_IN_CDB, field=FieldPointer(byte, bit, True))

    @classmethod
    def param(cls, byte: int, bit: int | None = None) -> ScsiError:
        """INVALID FIELD IN PARAMETER LIST pointing at `byte` of the data-out."""
        return cls(Sense.INVALID_FIELD_IN_PARAM_LIST, field=FieldPointer(byte, bit, False))

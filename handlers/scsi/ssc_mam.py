"""Medium auxiliary memory: READ ATTRIBUTE (8Ch) and WRITE ATTRIBUTE (8Dh), SPC-4 6.16/6.38.

Device and medium attributes are computed from the drive and the cartridge (read-only);
host attributes 0800h-0BFFh are stored by the cartridge (`Medium.set_host_attribute`).
LTFS reads one attribute at a time (ATTRIBUTE VALUES with FIRST ATTRIBUTE IDENTIFIER = the
one it wants) and treats INVALID FIELD IN CDB as "not set", so a first attribute that is
not available answers exactly that; LTFS also writes a PARAMETER DATA LENGTH that counts
the 4-byte header itself, so the list is parsed up to what was actually transferred.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from handlers.scsi.opcodes import Op
from handlers.scsi.sense import FieldPointer, ScsiError, Sense
from handlers.scsi.spc import DataOut, allocation, command, usage
from handlers.scsi.ssc_base import LTO8, MIB, TapeDriveBase
from thur.tape import HOST_ATTRIBUTE_FIRST, HOST_ATTRIBUTE_LAST, Medium

ATTRIBUTE_HEADER = struct.Struct(">HBH")
"""One MAM attribute: identifier, READ ONLY (bit 7) + FORMAT (bits 1-0), length; value follows."""

MAM_CAPACITY = 16 * 1024  # bytes of cartridge memory we claim (LTO-6 and later: 16 KiB)
MEDIUM_MANUFACTURER = "THUR"
CLEANING_CYCLES = 50  # LTO cleaning cartridges are rated for 50 uses


class AttrFormat(IntEnum):
    BINARY = 0
    ASCII = 1
    TEXT = 2


class ServiceAction(IntEnum):
    ATTRIBUTE_VALUES = 0x00
    ATTRIBUTE_LIST = 0x01
    LOGICAL_VOLUME_LIST = 0x02
    PARTITION_LIST = 0x03
    SUPPORTED_ATTRIBUTES = 0x05


@dataclass(frozen=True, slots=True)
class HostAttribute:
    """A standard host attribute: its format and length (None: variable)."""

    fmt: AttrFormat
    length: int | None


# SPC-4 table 341 (host type attributes). Others in 0800h-0BFFh are stored as binary.
HOST_ATTRIBUTES: dict[int, HostAttribute] = {
    0x0800: HostAttribute(AttrFormat.ASCII, 8),  # application vendor
    0x0801: HostAttribute(AttrFormat.ASCII, 32),  # application name
    0x0802: HostAttribute(AttrFormat.ASCII, 8),  # application version
    0x0803: HostAttribute(AttrFormat.TEXT, 160),  # user medium text label
    0x0804: HostAttribute(AttrFormat.ASCII, 12),  # date and time last written
    0x0805: HostAttribute(AttrFormat.BINARY, 1),  # text localization identifier
    0x0806: HostAttribute(AttrFormat.ASCII, 32),  # barcode
    0x0807: HostAttribute(AttrFormat.TEXT, 80),  # owning host textual name
    0x0808: HostAttribute(AttrFormat.TEXT, 160),  # media pool
    0x0809: HostAttribute(AttrFormat.ASCII, 16),  # partition user text label
    0x080A: HostAttribute(AttrFormat.BINARY, 1),  # load/unload at partition
    0x080B: HostAttribute(AttrFormat.ASCII, 16),  # application format version
    0x080C: HostAttribute(AttrFormat.BINARY, None),  # volume coherency information
    0x0820: HostAttribute(AttrFormat.BINARY, 36),  # medium globally unique identifier
    0x0821: HostAttribute(AttrFormat.BINARY, 36),  # media pool globally unique identifier
}
MAX_HOST_ATTRIBUTE = 1024  # longest value we store for a non-standard host attribute


@dataclass(frozen=True, slots=True)
class Attribute:
    ident: int
    fmt: AttrFormat
    value: bytes
    read_only: bool

    def encode(self) -> bytes:
        flags = (0x80 if self.read_only else 0) | int(self.fmt)
        return ATTRIBUTE_HEADER.pack(self.ident, flags, len(self.value)) + self.value


def ascii_value(text: str, width: int) -> bytes:
    return text.encode("ascii", "replace")[:width].ljust(width, b" ")


def u(value: int, width: int) -> bytes:
    return min(value, (1 << (8 * width)) - 1).to_bytes(width, "big")


Computed = Callable[["TapeAttributes", Medium, int], bytes]


def _remaining(drive: TapeAttributes, m: Medium, part: int) -> bytes:
    return u(max(m.partition_capacities()[part] - m.partition_used(part), 0) // MIB, 8)


def _maximum(drive: TapeAttributes, m: Medium, part: int) -> bytes:
    return u(m.partition_capacities()[part] // MIB, 8)


def _tapealert(drive: TapeAttributes, m: Medium, part: int) -> bytes:
    return u(sum(1 << (64 - f) for f in drive.tapealerts if 1 <= f <= 64), 8)


def _mam_space(drive: TapeAttributes, m: Medium, part: int) -> bytes:
    used = sum(ATTRIBUTE_HEADER.size + len(v) for v in m.host_attributes().values())
    return u(max(MAM_CAPACITY - used, 0), 8)


def _medium_type(drive: TapeAttributes, m: Medium, part: int) -> bytes:
    return b"\x01" if drive.cleaning else (b"\x80" if m.worm else b"\x00")


def _last_load(drive: TapeAttributes, m: Medium, part: int) -> bytes:
    # The cartridge is in this drive now, so "at last load" names this drive.
    return ascii_value(drive.identity.vendor, 8) + ascii_value(drive.identity.serial, 32)


# Device- and medium-type attributes (all read-only), by identifier: format and provider.
# Not reported because nothing records them: 0007h initialization count, 020Bh-020Dh
# earlier loads, 0220h/0221h lifetime totals, 0406h manufacture date.
COMPUTED: dict[int, tuple[AttrFormat, Computed]] = {
    0x0000: (AttrFormat.BINARY, _remaining),
    0x0001: (AttrFormat.BINARY, _maximum),
    0x0002: (AttrFormat.BINARY, _tapealert),
    0x0003: (AttrFormat.BINARY, lambda d, m, p: u(m.load_count + 1, 8)),
    0x0004: (AttrFormat.BINARY, _mam_space),
    0x0005: (AttrFormat.ASCII, lambda d, m, p: ascii_value(LTO8.organization, 8)),
    0x0006: (AttrFormat.BINARY, lambda d, m, p: u(m.density_code, 1)),
    0x0008: (AttrFormat.ASCII, lambda d, m, p: ascii_value(m.barcode, 32)),
    0x020A: (AttrFormat.ASCII, _last_load),
    0x0222: (AttrFormat.BINARY, lambda d, m, p: u(d.stats.mount_written // MIB, 8)),
    0x0223: (AttrFormat.BINARY, lambda d, m, p: u(d.stats.mount_read // MIB, 8)),
    0x0400: (AttrFormat.ASCII, lambda d, m, p: ascii_value(MEDIUM_MANUFACTURER, 8)),
    0x0401: (AttrFormat.ASCII, lambda d, m, p: ascii_value(m.barcode, 32)),
    0x0402: (AttrFormat.BINARY, lambda d, m, p: u(LTO8.length_m, 4)),
    0x0403: (AttrFormat.BINARY, lambda d, m, p: u(LTO8.media_width, 4)),
    0x0404: (AttrFormat.ASCII, lambda d, m, p: ascii_value(LTO8.organization, 8)),
    0x0405: (AttrFormat.BINARY, lambda d, m, p: u(m.density_code, 1)),
    0x0407: (AttrFormat.BINARY, lambda d, m, p: u(MAM_CAPACITY, 8)),
    0x0408: (AttrFormat.BINARY, _medium_type),
    0x0409: (AttrFormat.BINARY,
             lambda d, m, p: u(CLEANING_CYCLES if d.cleaning else 0, 2)),
}


class TapeAttributes(TapeDriveBase):
    """READ ATTRIBUTE / WRITE ATTRIBUTE over the loaded cartridge."""

    def _mam_medium(self) -> Medium:
        # MAM is readable without threading the tape, and on cleaning cartridges too.
        if self._medium is None:
            raise ScsiError(Sense.MEDIUM_NOT_PRESENT)
        return self._medium

    def attributes(self, medium: Medium, partition: int) -> list[Attribute]:
        """Every available attribute, ascending by identifier."""
        found = [Attribute(ident, fmt, provide(self, medium, partition), True)
                 for ident, (fmt, provide) in COMPUTED.items()]
        for ident, value in medium.host_attributes().items():
            std = HOST_ATTRIBUTES.get(ident)
            found.append(Attribute(ident, std.fmt if std else AttrFormat.BINARY, value, False))
        return sorted(found, key=lambda a: a.ident)

    @command(Op.READ_ATTRIBUTE,
             usage(0x8C, 0x1F, 0, 0, 0, 0xFF, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                   0x01))
    def read_attribute(self, cdb: bytes, data_out: DataOut) -> bytes:
        sa = cdb[1] & 0x1F
        volume, partition = cdb[5], cdb[7]
        first = struct.unpack_from(">H", cdb, 8)[0]
        alloc = struct.unpack_from(">I", cdb, 10)[0]
        if sa not in tuple(ServiceAction):
            raise ScsiError.cdb(1, 4)
        medium = self._mam_medium()
        partitions = len(medium.partition_capacities())
        if volume != 0:
            raise ScsiError.cdb(5, 7)
        if partition >= partitions:
            raise ScsiError.cdb(7, 7)
        if sa == ServiceAction.LOGICAL_VOLUME_LIST:
            return allocation(struct.pack(">HBB", 2, 0, 1), alloc)
        if sa == ServiceAction.PARTITION_LIST:
            return allocation(struct.pack(">HBB", 2, 0, partitions), alloc)
        attrs = self.attributes(medium, partition)
        if sa == ServiceAction.ATTRIBUTE_VALUES:
            if not any(a.ident == first for a in attrs):
                raise ScsiError.cdb(8, 7)  # the first attribute asked for is not available
            body = b"".join(a.encode() for a in attrs if a.ident >= first)
        elif sa == ServiceAction.ATTRIBUTE_LIST:
            body = b"".join(struct.pack(">H", a.ident) for a in attrs if a.ident >= first)
        else:
            supported = sorted({*COMPUTED, *HOST_ATTRIBUTES, *(a.ident for a in attrs)})
            body = b"".join(struct.pack(">H", i) for i in supported if i >= first)
        return allocation(struct.pack(">I", len(body)) + body, alloc)

    @command(Op.WRITE_ATTRIBUTE,
             usage(0x8D, 0x01, 0, 0, 0, 0xFF, 0, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0),
             data_out=True, needs_medium=True)
    def write_attribute(self, cdb: bytes, data_out: DataOut) -> None:
        if cdb[5] != 0:
            raise ScsiError.cdb(5, 7)
        length = struct.unpack_from(">I", cdb, 10)[0]
        data = self.data_out(data_out, length)
        medium = self._loaded()
        if not data:
            return
        if len(data) < 4:
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        # Validate everything first: WRITE ATTRIBUTE changes all attributes or none.
        updates = self._parse_attributes(data)
        current = dict(medium.host_attributes())
        for ident, value in updates:
            if value:
                current[ident] = value
            else:
                current.pop(ident, None)
        used = sum(ATTRIBUTE_HEADER.size + len(v) for v in current.values())
        if used > MAM_CAPACITY:
            raise ScsiError(Sense.AUX_MEMORY_OUT_OF_SPACE)
        with self.medium_errors():
            for ident, value in updates:
                medium.set_host_attribute(ident, value)

    def _parse_attributes(self, data: bytes) -> list[tuple[int, bytes]]:
        declared = struct.unpack_from(">I", data)[0]
        end = min(len(data), 4 + declared)
        pos, updates = 4, []
        while pos < end:
            if pos + ATTRIBUTE_HEADER.size > end:
                raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
            ident, flags, size = ATTRIBUTE_HEADER.unpack_from(data, pos)
            if pos + ATTRIBUTE_HEADER.size + size > end:
                raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
            if not HOST_ATTRIBUTE_FIRST <= ident <= HOST_ATTRIBUTE_LAST:
                # Device and medium attributes are read-only; other ids are unsupported.
                raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST,
                                field=FieldPointer(pos, 7, in_cdb=False))
            std = HOST_ATTRIBUTES.get(ident)
            if std is not None and size and flags & 0x03 != std.fmt:
                raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST,
                                field=FieldPointer(pos + 2, 1, in_cdb=False))
            limit = std.length if std is not None else None
            if size and (size != limit if limit is not None else size > MAX_HOST_ATTRIBUTE):
                raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST,
                                field=FieldPointer(pos + 3, 7, in_cdb=False))
            start = pos + ATTRIBUTE_HEADER.size
            updates.append((ident, bytes(data[start : start + size])))
            pos = start + size
        return updates

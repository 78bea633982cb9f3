"""The one MODE SENSE / MODE SELECT page framework (SPC-4 7.5).

A device registers `ModePage`s, each with default, changeable-mask and current values
(saved values are not supported: PS is 0 and page control 11b answers 39/00). MODE SENSE
and MODE SELECT of both CDB sizes go through `ModePages`, so block descriptors, page 3Fh,
subpages and changeable masks behave the same on every device.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum

from handlers.scsi.sense import FieldPointer, ScsiError, Sense


class PageControl(IntEnum):
    CURRENT = 0
    CHANGEABLE = 1
    DEFAULT = 2
    SAVED = 3


ALL_PAGES = 0x3F
ALL_SUBPAGES = 0xFF

HEADER_6 = struct.Struct(">BBBB")
"""MODE parameter header(6): mode data length, medium type, device-specific, BD length."""

HEADER_10 = struct.Struct(">HBBBxH")
"""MODE parameter header(10): data length, medium type, device-specific, LONGLBA, BD length."""

SHORT_BLOCK_DESCRIPTOR = struct.Struct(">B3sx3s")
"""General mode parameter block descriptor (8 bytes): density, number of blocks, block length."""

LONG_BLOCK_DESCRIPTOR = struct.Struct(">QxxxxI")
"""Long LBA block descriptor (16 bytes): number of blocks, 4 reserved, block length."""


@dataclass(frozen=True, slots=True)
class BlockDescriptor:
    density: int = 0
    blocks: int = 0
    block_length: int = 0

    def encode(self, long: bool) -> bytes:
        if long:
            return LONG_BLOCK_DESCRIPTOR.pack(self.blocks, self.block_length)
        return SHORT_BLOCK_DESCRIPTOR.pack(
            self.density,
            min(self.blocks, 0xFFFFFF).to_bytes(3, "big"),
            (self.block_length & 0xFFFFFF).to_bytes(3, "big"),
        )

    @classmethod
    def decode(cls, raw: bytes, long: bool) -> BlockDescriptor:
        if long:
            blocks, length = LONG_BLOCK_DESCRIPTOR.unpack(raw)
            return cls(0, blocks, length)
        density, blocks, length = SHORT_BLOCK_DESCRIPTOR.unpack(raw)
        return cls(density, int.from_bytes(blocks, "big"), int.from_bytes(length, "big"))


Validator = Callable[[bytes], None]
"""Checks a proposed page (full bytes incl. header); raises ScsiError with page-relative bytes."""


@dataclass(slots=True)
class ModePage:
    """One mode page. `default` and `changeable` include the 2- or 4-byte page header.

    `provider`, when set, computes the current value (pages that reflect device state, such
    as the changer's element address assignment); such pages are never changeable.
    `on_change` runs after a MODE SELECT has been applied to this page.
    """

    code: int
    default: bytes
    subpage: int = 0
    changeable: bytes | None = None
    validator: Validator | None = None
    on_change: Callable[[bytes], None] | None = None
    provider: Callable[[], bytes] | None = None
    current: bytearray = field(init=False)

    def __post_init__(self) -> None:
        if self.changeable is None:
            self.changeable = bytes(len(self.default))
        if len(self.changeable) != len(self.default):
            raise ValueError(f"mode page {self.code:#x}: mask and default lengths differ")
        self.current = bytearray(self.default)

    @property
    def spf(self) -> bool:
        return self.subpage != 0

    @property
    def header_length(self) -> int:
        return 4 if self.spf else 2

    def value(self, pc: PageControl) -> bytes:
        if pc == PageControl.CHANGEABLE:
            body = bytes(self.changeable or b"")
        elif pc == PageControl.DEFAULT:
            body = self.default
        else:
            body = self.provider() if self.provider else bytes(self.current)
        return self._with_header(body)

    def _with_header(self, body: bytes) -> bytes:
        out = bytearray(body)
        out[0] = (self.code & 0x3F) | (0x40 if self.spf else 0)  # PS = 0: never savable
        if self.spf:
            out[1] = self.subpage
            out[2:4] = struct.pack(">H", len(out) - 4)
        else:
            out[1] = len(out) - 2
        return bytes(out)

    def reset(self) -> None:
        self.current[:] = self.default


def page(code: int, length: int, values: dict[int, int] | None = None, subpage: int = 0) -> bytes:
    """Build page bytes of `length` total bytes with `values` {offset: byte} filled in."""
    out = bytearray(length)
    for offset, value in (values or {}).items():
        out[offset] = value
    out[0] = code | (0x40 if subpage else 0)
    if subpage:
        out[1] = subpage
        out[2:4] = struct.pack(">H", length - 4)
    else:
        out[1] = length - 2
    return bytes(out)


class ModePages:
    """The registry of one logical unit's mode pages plus its block-descriptor hooks."""

    def __init__(self) -> None:
        self._pages: dict[tuple[int, int], ModePage] = {}
        # Devices with block descriptors (tape) override these two callables.
        self.block_descriptors: Callable[[], list[BlockDescriptor]] = list
        # check_...: raises ScsiError with a descriptor-relative parameter field pointer;
        # apply_...: runs only once the whole parameter list has been validated.
        self.check_block_descriptor: Callable[[BlockDescriptor], None] | None = None
        self.apply_block_descriptor: Callable[[BlockDescriptor], None] | None = None
        self.device_specific: Callable[[], int] = lambda: 0
        self.medium_type: Callable[[], int] = lambda: 0
        self.long_lba_supported = False

    def add(self, mode_page: ModePage) -> ModePage:
        self._pages[(mode_page.code, mode_page.subpage)] = mode_page
        return mode_page

    def get(self, code: int, subpage: int = 0) -> ModePage | None:
        return self._pages.get((code, subpage))

    def __iter__(self) -> Iterator[ModePage]:
        return iter(sorted(self._pages.values(), key=lambda p: (p.code, p.subpage)))

    # ---- MODE SENSE ------------------------------------------------------------------

    def sense(self, cdb: bytes, ten: bool) -> bytes:
        """Build the full (untruncated) MODE SENSE parameter data for `cdb`."""
        dbd = bool(cdb[1] & 0x08)
        llbaa = ten and bool(cdb[1] & 0x10)
        pc = PageControl(cdb[2] >> 6)
        code, subpage = cdb[2] & 0x3F, cdb[3]
        if pc == PageControl.SAVED:
            raise ScsiError(Sense.SAVING_PARAMETERS_NOT_SUPPORTED)
        pages = self._select(code, subpage)
        body = b"".join(p.value(pc) for p in pages)
        long = llbaa and self.long_lba_supported
        descriptors = b"" if dbd else b"".join(d.encode(long) for d in self.block_descriptors())
        if ten:
            total = HEADER_10.size + len(descriptors) + len(body)
            head = HEADER_10.pack(
                min(total - 2, 0xFFFF), self.medium_type(), self.device_specific(),
                1 if long and descriptors else 0, len(descriptors),
            )
        else:
            total = HEADER_6.size + len(descriptors) + len(body)
            head = HEADER_6.pack(
                min(total - 1, 0xFF), self.medium_type(), self.device_specific(),
                len(descriptors),
            )
        data = head + descriptors + body
        # MODE SENSE(6) cannot describe more than 256 bytes; what fits is returned.
        return data if ten else data[:256]

    def _select(self, code: int, subpage: int) -> list[ModePage]:
        every = list(self)
        if code == 0 and subpage == 0 and self.get(0) is None:
            # Page 0 "vendor specific": header and block descriptors only. The Linux st
            # driver asks exactly this (MODE SENSE(6), page 0, 12 bytes) to learn the
            # density, block size and write protection.
            return []
        if code == ALL_PAGES:
            if subpage == 0:
                return [p for p in every if p.subpage == 0]
            if subpage == ALL_SUBPAGES:
                return every
            raise ScsiError.cdb(3, 7)
        if subpage == ALL_SUBPAGES:
            found = [p for p in every if p.code == code]
        else:
            one = self.get(code, subpage)
            found = [one] if one else []
        if not found:
            if subpage in (0, ALL_SUBPAGES) or not any(p.code == code for p in every):
                raise ScsiError.cdb(2, 5)  # the page code itself is unknown
            raise ScsiError.cdb(3, 7)
        return found

    # ---- MODE SELECT -----------------------------------------------------------------

    def select(self, cdb: bytes, data: bytes, ten: bool) -> None:
        """Validate the whole parameter list against the changeable masks, then apply it."""
        if cdb[1] & 0x01:  # SP: saving pages is not supported
            raise ScsiError.cdb(1, 0)
        header = HEADER_10 if ten else HEADER_6
        if not data:
            return
        if len(data) < header.size:
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        if ten:
            _, _, _, longlba, bd_len = HEADER_10.unpack_from(data)
            long = bool(longlba & 0x01)
        else:
            _, _, _, bd_len = HEADER_6.unpack_from(data)
            long = False
        pos = header.size
        step = LONG_BLOCK_DESCRIPTOR.size if long else SHORT_BLOCK_DESCRIPTOR.size
        if bd_len % step or pos + bd_len > len(data):
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        descriptors = [
            BlockDescriptor.decode(data[off : off + step], long)
            for off in range(pos, pos + bd_len, step)
        ]
        if descriptors and self.apply_block_descriptor is None:
            raise ScsiError.param(header.size - 1 if not ten else 6)
        check = self.check_block_descriptor
        if check is not None:
            for index, d in enumerate(descriptors):
                _rebased(functools.partial(check, d), pos + index * step)
        pos += bd_len
        staged: list[tuple[ModePage, bytes]] = []
        while pos < len(data):
            staged.append(self._check_page(data, pos))
            pos += len(staged[-1][1])
        # Everything validated: now apply (a MODE SELECT is all-or-nothing).
        if self.apply_block_descriptor is not None:
            for d in descriptors:
                self.apply_block_descriptor(d)
        for mode_page, new in staged:
            mask = mode_page.changeable or b""
            for i in range(mode_page.header_length, len(new)):
                mode_page.current[i] = (mode_page.current[i] & ~mask[i]) | (new[i] & mask[i])
            if mode_page.on_change:
                mode_page.on_change(bytes(mode_page.current))

    def _check_page(self, data: bytes, pos: int) -> tuple[ModePage, bytes]:
        spf = bool(data[pos] & 0x40)
        hlen = 4 if spf else 2
        if pos + hlen > len(data):
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        code = data[pos] & 0x3F
        subpage = data[pos + 1] if spf else 0
        length = (struct.unpack_from(">H", data, pos + 2)[0] if spf else data[pos + 1]) + hlen
        mode_page = self.get(code, subpage)
        if mode_page is None or mode_page.provider is not None and not any(
            mode_page.changeable or b""
        ):
            raise ScsiError.param(pos, 5)
        if length != len(mode_page.default):
            raise ScsiError.param(pos + (2 if spf else 1))
        if pos + length > len(data):
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        new = data[pos : pos + length]
        mask = mode_page.changeable or b""
        for i in range(hlen, length):
            diff = (new[i] ^ mode_page.current[i]) & ~mask[i] & 0xFF
            if diff:
                raise ScsiError.param(pos + i, diff.bit_length() - 1)
        if mode_page.validator:
            merged = bytearray(mode_page.current)
            for i in range(hlen, length):
                merged[i] = (merged[i] & ~mask[i]) | (new[i] & mask[i])
            validator = mode_page.validator
            _rebased(lambda: validator(bytes(merged)), pos)
        return mode_page, new


def _rebased(check: Callable[[], None], offset: int) -> None:
    """Run `check`; move a parameter-list field pointer it raises by `offset` bytes."""
    try:
        check()
    except ScsiError as err:
        fp = err.sense_data.field
        if fp is not None and not fp.in_cdb:
            raise ScsiError(err.sense_data.code, field=fp.shifted(offset)) from None
        raise


def sense_field(byte: int, bit: int | None = None) -> FieldPointer:
    """A page-relative parameter-list field pointer, for validators."""
    return FieldPointer(byte, bit, in_cdb=False)

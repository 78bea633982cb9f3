"""LOG SENSE / LOG SELECT framework (SPC-4 7.3): pages as providers of parameters.

A log page is a function returning its parameters at the time of the command; page 00h
(supported pages) and 00h/FFh (supported pages and subpages) are derived from the registry,
so they cannot disagree with what LOG SENSE actually serves.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from handlers.scsi.sense import ScsiError

PAGE_HEADER = struct.Struct(">BBH")
"""Log page header: DS/SPF/page code, subpage code, page length."""

PARAM_HEADER = struct.Struct(">HBB")
"""Log parameter header: parameter code, control byte, parameter length."""

# Parameter control byte: FORMAT AND LINKING 11b = binary list; 00b = bounded counter.
BINARY_LIST = 0x03
BOUNDED_COUNTER = 0x00
TSD = 0x20  # target save disable: we never save log parameters


@dataclass(frozen=True, slots=True)
class LogParam:
    code: int
    value: bytes
    control: int = BINARY_LIST | TSD

    def encode(self, zero: bool = False) -> bytes:
        value = bytes(len(self.value)) if zero else self.value
        return PARAM_HEADER.pack(self.code, self.control, len(value)) + value


def counter(code: int, value: int, width: int = 8) -> LogParam:
    """A saturating unsigned counter parameter."""
    value = min(value, (1 << (8 * width)) - 1)
    return LogParam(code, value.to_bytes(width, "big"), BOUNDED_COUNTER | TSD)


@dataclass(slots=True)
class LogPage:
    code: int
    params: Callable[[], list[LogParam]]
    subpage: int = 0
    reset: Callable[[], None] | None = None  # LOG SELECT PCR=1 clears what can be cleared
    # A page whose reading clears it (TapeAlert flags are read-and-clear).
    after_read: Callable[[], None] | None = None


class LogPages:
    def __init__(self) -> None:
        self._pages: dict[tuple[int, int], LogPage] = {}

    def add(self, log_page: LogPage) -> LogPage:
        self._pages[(log_page.code, log_page.subpage)] = log_page
        return log_page

    def _supported(self, with_subpages: bool) -> bytes:
        keys = sorted(set(self._pages) | {(0, 0)} | ({(0, 0xFF)} if with_subpages else set()))
        if with_subpages:
            return b"".join(bytes([c, s]) for c, s in keys)
        return bytes(sorted({c for c, s in keys if s == 0}))

    def sense(self, cdb: bytes) -> bytes:
        """Full (untruncated) LOG SENSE data for `cdb`."""
        if cdb[1] & 0x01:  # SP: saving parameters is not supported
            raise ScsiError.cdb(1, 0)
        pc = cdb[2] >> 6
        code, subpage = cdb[2] & 0x3F, cdb[3]
        pointer = struct.unpack_from(">H", cdb, 5)[0]
        if code == 0 and subpage in (0, 0xFF):
            if pointer:
                raise ScsiError.cdb(5, 7)
            body = self._supported(subpage == 0xFF)
            spf = 0x40 if subpage else 0
            return PAGE_HEADER.pack(spf, subpage, len(body)) + body
        log_page = self._pages.get((code, subpage))
        if log_page is None:
            raise ScsiError.cdb(2 if subpage == 0 else 3, 5 if subpage == 0 else 7)
        params = sorted(log_page.params(), key=lambda p: p.code)
        if params and pointer > params[-1].code:
            raise ScsiError.cdb(5, 7)
        # Thresholds (PC 0, 2) and default cumulative values (PC 3) are all zero here:
        # we keep no thresholds and the defaults of every counter are zero.
        body = b"".join(p.encode(zero=pc != 1) for p in params if p.code >= pointer)
        if log_page.after_read and pc == 1:
            log_page.after_read()
        spf = 0x40 if subpage else 0
        return PAGE_HEADER.pack(spf | code, subpage, len(body)) + body

    def select(self, cdb: bytes, data: bytes) -> None:
        """LOG SELECT: only PCR (reset) is supported; no parameter is host-writable."""
        if cdb[1] & 0x01:
            raise ScsiError.cdb(1, 0)
        if data:
            # No log parameter is writable: the first parameter's code is in error.
            raise ScsiError.param(4 if len(data) > 4 else 0)
        if cdb[1] & 0x02:  # PCR
            code, subpage = cdb[2] & 0x3F, cdb[3]
            for (c, s), log_page in self._pages.items():
                if (code == 0 or (c, s) == (code, subpage)) and log_page.reset:
                    log_page.reset()


def tapealert_page(flags: Callable[[], set[int]]) -> Callable[[], list[LogParam]]:
    """TapeAlert log page 2Eh: 64 one-byte flags, parameter codes 0001h..0040h."""

    def params() -> list[LogParam]:
        active = flags()
        return [LogParam(n, b"\x01" if n in active else b"\x00") for n in range(1, 65)]

    return params

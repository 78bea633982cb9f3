"""One CMD entry: copy its request out of the map, move data, write its response.

Split from `handlers.tcmu.ring` so the ring walk stays readable. Everything here is
about bytes in the shared map and trusts none of them: iovecs must lie in the data
area, the CDB inside its entry, and data-in never goes past the iovecs.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from handlers.scsi.engine import CHECK_CONDITION
from handlers.tcmu.uapi import (
    IOV_OFFSET,
    IOV_SIZE,
    TCMU_SENSE_BUFFERSIZE,
    TCMU_UFLAG_READ_LEN,
    ffi,
)
from thur.fsutil import UNLOCKED_COPY_MIN

SAM_STAT_TASK_ABORTED = 0x40
_SENSE_OFFSET = ffi.offsetof("struct tcmu_cmd_entry", "rsp", "sense_buffer")
_ZERO_SENSE = bytes(TCMU_SENSE_BUFFERSIZE)

# CDB length by opcode group (bits 7..5), as the kernel's scsi_command_size() computes it;
# the kernel copies exactly this many bytes into the entry.
_GROUP_CDB_LEN = (6, 10, 10, 12, 16, 12, 10, 10)
_VARIABLE_LENGTH_CMD = 0x7F

Iovecs = list[tuple[int, int]]  # (offset into the map, length)

# PyBytes_FromStringAndSize(NULL, n): a new bytes object whose n bytes the caller fills
# before anyone else sees it (the C API's own way to build bytes in place).
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)


def _gather_unlocked(map_addr: int, iovs: Iovecs, total: int) -> bytes:
    """The iovecs' bytes as one new `bytes`, copied with `ctypes.memmove`.

    Why: a slice copy (`tobytes`, `join`) holds the GIL for the whole memcpy, and a
    tape drive's data-out is megabytes per command, so with two drives streaming the
    other drive's thread waited on this copy. ctypes releases the GIL around the
    foreign call; the iovecs were checked to lie inside the map by `copy_out`, and the
    new object is not visible to any other thread until it is returned.
    """
    out = _new_bytes(None, total)
    dst = ctypes.cast(ctypes.c_char_p(out), ctypes.c_void_p).value
    assert dst is not None
    pos = 0
    for base, ln in iovs:
        ctypes.memmove(dst + pos, map_addr + base, ln)
        pos += ln
    return out


class BadEntry(Exception):
    """A CMD entry whose length is sane but whose contents are not (iovecs, cdb_off)."""


def cdb_length(opcode: int, byte7: int = 0) -> int:
    """Bytes the kernel copies for a CDB starting with `opcode` (`byte7` for 0x7F)."""
    if opcode == _VARIABLE_LENGTH_CMD:
        return 8 + byte7
    return _GROUP_CDB_LEN[opcode >> 5]


def internal_failure_sense() -> bytes:
    """Fixed-format sense: HARDWARE ERROR, INTERNAL TARGET FAILURE (04/44/00).

    Deliberately tiny: the SCSI package owns the real sense builders; the ring only
    needs this one answer for failures that are its own or an engine's crash.
    """
    sense = bytearray(18)
    sense[0] = 0x70  # current error, fixed format
    sense[2] = 0x04  # HARDWARE ERROR
    sense[7] = 10  # additional sense length
    sense[12] = 0x44
    return bytes(sense)


@dataclass(slots=True)
class Request:
    """What a CMD entry asks, copied out of the map before the response overwrites it."""

    cmd_id: int
    cdb: bytes
    out_iovs: Iovecs  # data-out buffer (for reads: the data-in buffer, see in_iovs)
    in_iovs: Iovecs
    bidi: bool


class CommandIO:
    """Reads requests from and writes responses to CMD entries in one map."""

    def __init__(
        self, mv: memoryview, data_off: int, read_len_supported: bool, map_addr: int
    ) -> None:
        self._mv = mv
        self._map_addr = map_addr  # address of mv[0]; the caller keeps the map alive
        self._size = len(mv)
        self._data_off = data_off
        self._read_len = read_len_supported

    def copy_out(self, entry: Any, off: int, length: int) -> Request:
        """The entry at map offset `off` as a `Request`; `BadEntry` if it lies."""
        req = entry.req
        iov_cnt = int(req.iov_cnt)
        bidi_cnt = int(req.iov_bidi_cnt)
        total = iov_cnt + bidi_cnt + int(req.iov_dif_cnt)
        if IOV_OFFSET + total * IOV_SIZE > length:
            raise BadEntry(f"{total} iovecs do not fit in a {length}-byte entry")
        iovs: Iovecs = []
        for i in range(iov_cnt + bidi_cnt):
            iov = req.iov[i]
            base = int(ffi.cast("uintptr_t", iov.iov_base))
            ln = int(iov.iov_len)
            if base < self._data_off or base + ln > self._size:
                raise BadEntry(f"iovec {i} [{base}, +{ln}) is outside the data area")
            iovs.append((base, ln))
        cdb_off = int(req.cdb_off)
        end = off + length
        if not off + IOV_OFFSET <= cdb_off < end:
            raise BadEntry(f"cdb_off {cdb_off} is outside the entry")
        mv = self._mv
        want = cdb_length(mv[cdb_off], mv[cdb_off + 7] if cdb_off + 7 < end else 0)
        cdb = bytes(mv[cdb_off : min(cdb_off + want, end)])  # never past the entry
        cmd_id = int(entry.hdr.cmd_id)
        if bidi_cnt:
            return Request(cmd_id, cdb, iovs[:iov_cnt], iovs[iov_cnt:], True)
        return Request(cmd_id, cdb, iovs, iovs, False)

    def gather(self, iovs: Iovecs) -> memoryview:
        """Data-out, copied so the engine may keep it after the entry is completed."""
        mv = self._mv
        total = sum(ln for _, ln in iovs)
        if total >= UNLOCKED_COPY_MIN:  # else a plain copy is cheaper (fsutil.py)
            return memoryview(_gather_unlocked(self._map_addr, iovs, total))
        if len(iovs) == 1:
            base, ln = iovs[0]
            return memoryview(mv[base : base + ln].tobytes())
        return memoryview(b"".join([mv[base : base + ln] for base, ln in iovs]))

    def scatter(self, src: memoryview, iovs: Iovecs, status: int) -> int:
        """Copy data-in into the iovecs; return the read_len to report (0: none).

        A short transfer is reported with READ_LEN when the kernel supports it (and the
        length is not 0, which the kernel reads as "not set"). Otherwise the kernel
        transfers the whole buffer, so the unfilled part is zeroed rather than left
        holding another command's data; on CHECK CONDITION it transfers nothing.
        """
        mv = self._mv
        pos = 0
        total = 0
        for base, ln in iovs:
            total += ln
            n = min(ln, len(src) - pos)
            if n > 0:
                mv[base : base + n] = src[pos : pos + n]
                pos += n
        if pos == total:
            return 0
        if pos > 0 and self._read_len:
            return pos
        if status != CHECK_CONDITION:
            self._zero_from(iovs, pos)
        return 0

    def _zero_from(self, iovs: Iovecs, start: int) -> None:
        skip = start
        for base, ln in iovs:
            if skip >= ln:
                skip -= ln
                continue
            self._mv[base + skip : base + ln] = bytes(ln - skip)
            skip = 0

    def respond(self, entry: Any, off: int, status: int, sense: bytes, read_len: int) -> None:
        """Write ``rsp`` (which overlays ``req``) and the response flags."""
        rsp = entry.rsp
        rsp.scsi_status = status
        entry.hdr.uflags = TCMU_UFLAG_READ_LEN if read_len else 0
        rsp.read_len = read_len
        if sense or status == CHECK_CONDITION:
            # The kernel copies all 96 bytes: zero what is left of the overlaid request.
            buf = sense[:TCMU_SENSE_BUFFERSIZE]
            start = off + _SENSE_OFFSET
            self._mv[start : start + TCMU_SENSE_BUFFERSIZE] = buf + _ZERO_SENSE[len(buf) :]

"""A user-space stand-in for the kernel side of a TCMU ring, for tests and benchmarks.

`FakeKernel` lays entries into an anonymous shared map the way
``drivers/target/target_core_user.c`` does, so the handler's `Ring` can be exercised
byte-for-byte without LIO:

* mailbox at 0 (version 2, CAP_OOOC | CAP_READ_LEN | CAP_TMR, ``cmdr_off`` 128), the
  command ring right after it, the data area right after the ring;
* every entry is a multiple of ``TCMU_OP_ALIGN_SIZE``; a CMD entry is
  ``max(offsetof(req.iov[n]), sizeof(entry))`` plus the CDB rounded up to 8, with the
  CDB placed right after the iovecs; a PAD entry fills the end of the ring when the
  next entry would not fit, and one byte of the ring is always kept free;
* the data area is handed out in blocks, lowest free block first, and contiguous
  blocks merge into one iovec; iovec bases are offsets from the start of the map;
* command ids are the lowest free id >= 1 (the kernel's ``idr``/``xarray``);
* blocks for data-in are *not* cleared (like the kernel); here they are poisoned so
  a test sees any stale byte that reaches the initiator.

Completions are reaped as ``tcmu_handle_completions`` does: walk from the last cleaned
offset to ``cmd_tail``, look each CMD entry up by ``cmd_id``, honour ``READ_LEN`` and
drop data on CHECK CONDITION without it. Protocol violations raise `HandlerBug`.
"""

from __future__ import annotations

import contextlib
import heapq
import mmap
import os
import select
import socket
from dataclasses import dataclass
from typing import Any

from handlers.tcmu.fake_data import POISON, DataArea, HandlerBug, RingFull
from handlers.tcmu.uapi import (
    CMD_ENTRY_SIZE,
    IOV_OFFSET,
    IOV_SIZE,
    MAILBOX_SIZE,
    TCMU_MAILBOX_FLAG_CAP_OOOC,
    TCMU_MAILBOX_FLAG_CAP_READ_LEN,
    TCMU_MAILBOX_FLAG_CAP_TMR,
    TCMU_MAILBOX_VERSION,
    TCMU_OP_ALIGN_SIZE,
    TCMU_OP_MASK,
    TCMU_UFLAG_READ_LEN,
    TCMU_UFLAG_UNKNOWN_OP,
    TMR_ENTRY_SIZE,
    TcmuOp,
    ffi,
    make_len_op,
)

__all__ = ["Completion", "FakeKernel", "HandlerBug", "POISON", "RingFull"]

DEFAULT_FLAGS = (
    TCMU_MAILBOX_FLAG_CAP_OOOC | TCMU_MAILBOX_FLAG_CAP_READ_LEN | TCMU_MAILBOX_FLAG_CAP_TMR
)
CHECK_CONDITION = 0x02
_SENSE_OFFSET = ffi.offsetof("struct tcmu_cmd_entry", "rsp", "sense_buffer")
_GROUP_CDB_LEN = (6, 10, 10, 12, 16, 12, 10, 10)


@dataclass(slots=True, frozen=True)
class Completion:
    """What the initiator would get for one command."""

    cmd_id: int
    status: int
    sense: bytes
    data_in: bytes  # exactly the bytes the kernel would transfer
    read_len: int | None  # rsp.read_len when the kernel honoured it
    uflags: int


@dataclass(slots=True)
class _Inflight:
    ring_off: int
    blocks: list[int]
    in_iovs: list[tuple[int, int]]
    data_length: int  # of the data-in buffer (0 when the command reads nothing)
    reads: bool  # DMA_FROM_DEVICE: the only direction READ_LEN applies to


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def scsi_command_size(cdb: bytes) -> int:
    """The kernel's idea of the CDB length (what it copies into the entry)."""
    if cdb[0] == 0x7F:
        return 8 + (cdb[7] if len(cdb) > 7 else 0)
    return _GROUP_CDB_LEN[cdb[0] >> 5]


def _sense_length(buf: bytes) -> int:
    """Meaningful bytes of a sense buffer: 8 + additional length for 70h-73h."""
    if buf and buf[0] & 0x7F in (0x70, 0x71, 0x72, 0x73):
        return min(len(buf), 8 + buf[7])
    return 0


class FakeKernel:
    """The kernel end of one TCMU device, in one anonymous shared map.

    `start_offset` places ``cmd_head``/``cmd_tail`` somewhere other than 0, as on a ring
    that has been in use (reattach tests). The handler side reads and writes 4-byte
    doorbells on `handler_fd`, exactly like a uio fd.
    """

    def __init__(
        self,
        *,
        cmdr_size: int = (1 << 20) - MAILBOX_SIZE,
        data_blocks: int = 256,
        block_size: int = 4096,
        flags: int = DEFAULT_FLAGS,
        start_offset: int = 0,
        poison: bool = True,
    ) -> None:
        if cmdr_size % TCMU_OP_ALIGN_SIZE or start_offset % TCMU_OP_ALIGN_SIZE:
            raise ValueError("ring size and start offset must be 8-aligned")
        if not 0 <= start_offset < cmdr_size:
            raise ValueError("start_offset outside the ring")
        self.cmdr_off = MAILBOX_SIZE
        self.cmdr_size = cmdr_size
        self.data_off = self.cmdr_off + cmdr_size
        self.block_size = block_size
        self.size = self.data_off + data_blocks * block_size
        # A memfd rather than an anonymous map: the data-out scatter is a pwrite to it,
        # a copy made without the GIL, as the kernel's copy is made outside the handler.
        self._fd = os.memfd_create("fake-tcmu", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, self.size)
        self.map = mmap.mmap(self._fd, self.size)
        self._mv = memoryview(self.map)
        self._base = ffi.from_buffer("char[]", self.map, require_writable=True)
        self._mb = ffi.cast("struct tcmu_mailbox *", self._base)
        self._mb.version = TCMU_MAILBOX_VERSION
        self._mb.flags = flags
        self._mb.cmdr_off = self.cmdr_off
        self._mb.cmdr_size = cmdr_size
        self._mb.cmd_head = start_offset
        self._mb.cmd_tail = start_offset
        self._head = start_offset
        self._last_cleaned = start_offset
        self._zeros = bytes(max(cmdr_size // 2, CMD_ENTRY_SIZE))
        self._data = DataArea(
            self._mv, self._fd, self.data_off, data_blocks, block_size, poison
        )
        self._free_ids: list[int] = []
        self._next_id = 1
        self._inflight: dict[int, _Inflight] = {}
        self._kernel_sock, self._handler_sock = socket.socketpair()
        self._kernel_sock.setblocking(False)
        self.kicks = 0

    # -- plumbing ------------------------------------------------------------------------

    @property
    def handler_fd(self) -> int:
        """The handler's end of the doorbell (read 4 bytes to wait, write 4 to notify)."""
        return self._handler_sock.fileno()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def head(self) -> int:
        return self._head

    def kick(self) -> None:
        """uio_event_notify(): wake the handler. Kicks coalesce, as uio events do."""
        self.kicks += 1
        # A full socket buffer means the handler already has unread wake-ups pending.
        with contextlib.suppress(BlockingIOError):
            self._kernel_sock.send(b"\x01\x00\x00\x00")

    def wait_notified(self, timeout: float) -> bool:
        """Wait for the handler's write to the uio fd; drain all pending notifications."""
        # poll, not select: select refuses fds >= 1024 (FD_SETSIZE).
        poller = select.poll()
        poller.register(self._kernel_sock, select.POLLIN)
        if not poller.poll(max(0, int(timeout * 1000))):
            return False
        with contextlib.suppress(BlockingIOError):
            while self._kernel_sock.recv(65536):
                pass
        return True

    def unplug(self) -> None:
        """Simulate the backstore being deleted: the handler's doorbell sees EOF."""
        self._kernel_sock.close()

    def close(self) -> None:
        self._mb = ffi.NULL
        ffi.release(self._base)
        self._mv.release()
        self.map.close()
        os.close(self._fd)
        self._kernel_sock.close()
        self._handler_sock.close()

    # -- queueing ------------------------------------------------------------------------

    def submit(
        self,
        cdb: bytes,
        data_out: bytes | None = None,
        data_in_len: int = 0,
        iov_split: int = 1,
    ) -> int:
        """Queue one command as queue_cmd_ring() would; return its cmd_id.

        `data_out` makes it a write, `data_in_len` a read (both: bidirectional).
        `iov_split` > 1 fragments each buffer into that many discontiguous runs of
        blocks, which is how multi-iovec commands arise in the kernel.
        """
        data = self._data
        out_len = len(data_out) if data_out is not None else 0
        out_blocks = data.alloc(out_len, iov_split)
        try:
            in_blocks = data.alloc(data_in_len, iov_split)
        except BaseException:
            data.free(out_blocks)
            raise
        out_iovs = data.iovecs(out_blocks, out_len)
        in_iovs = data.iovecs(in_blocks, data_in_len)
        cdb_len = scsi_command_size(cdb)
        base_size = max(IOV_OFFSET + IOV_SIZE * (len(out_iovs) + len(in_iovs)), CMD_ENTRY_SIZE)
        cmd_size = base_size + _round_up(cdb_len, TCMU_OP_ALIGN_SIZE)
        if cmd_size > self.cmdr_size // 2:
            data.free(out_blocks + in_blocks)
            raise ValueError(f"command of {cmd_size} bytes is too big for the ring")
        if not self._ring_space(cmd_size):
            data.free(out_blocks + in_blocks)
            raise RingFull("command ring full")
        try:
            cmd_id = self._alloc_id()
        except RingFull:
            data.free(out_blocks + in_blocks)
            raise

        head = self._insert_padding(cmd_size)
        off = self.cmdr_off + head
        self._mv[off : off + cmd_size] = self._zeros[:cmd_size]
        entry = ffi.cast("struct tcmu_cmd_entry *", self._base + off)
        bidi = data_out is not None and data_in_len > 0
        first_iovs = out_iovs if data_out is not None else in_iovs
        for i, (base, ln) in enumerate(first_iovs + (in_iovs if bidi else [])):
            entry.req.iov[i].iov_base = ffi.cast("void *", base)
            entry.req.iov[i].iov_len = ln
        entry.req.iov_cnt = len(first_iovs)
        entry.req.iov_bidi_cnt = len(in_iovs) if bidi else 0
        if data_out is not None:
            data.write(data_out, out_iovs)
        data.poison(in_blocks)  # the kernel leaves stale bytes here; make them visible

        entry.hdr.cmd_id = cmd_id
        entry.hdr.len_op = make_len_op(cmd_size, TcmuOp.CMD)
        cdb_off = off + base_size
        padded = bytes(cdb[:cdb_len]).ljust(cdb_len, b"\0")
        self._mv[cdb_off : cdb_off + cdb_len] = padded
        entry.req.cdb_off = cdb_off
        self._inflight[cmd_id] = _Inflight(
            ring_off=head,
            blocks=out_blocks + in_blocks,
            in_iovs=in_iovs,
            data_length=data_in_len,
            reads=data_out is None and data_in_len > 0,
        )
        self._publish_head(head + cmd_size)
        return cmd_id

    def submit_tmr(self, tmr_type: int, cmd_ids: list[int] | tuple[int, ...]) -> None:
        """Queue a TMR notification as queue_tmr_ring() would."""
        cmd_size = _round_up(TMR_ENTRY_SIZE + 2 * len(cmd_ids), TCMU_OP_ALIGN_SIZE)
        if not self._ring_space(cmd_size):
            raise RingFull("command ring full")
        head = self._insert_padding(cmd_size)
        off = self.cmdr_off + head
        self._mv[off : off + cmd_size] = self._zeros[:cmd_size]
        tmr = ffi.cast("struct tcmu_tmr_entry *", self._base + off)
        tmr.hdr.len_op = make_len_op(cmd_size, TcmuOp.TMR)
        tmr.tmr_type = tmr_type
        tmr.cmd_cnt = len(cmd_ids)
        for i, cmd_id in enumerate(cmd_ids):
            tmr.cmd_ids[i] = cmd_id
        self._publish_head(head + cmd_size)

    def entry_offset(self, cmd_id: int) -> int:
        """Map offset of an in-flight command's entry (for tests that corrupt it)."""
        return self.cmdr_off + self._inflight[cmd_id].ring_off

    def entry(self, cmd_id: int) -> Any:
        """The in-flight command's ``struct tcmu_cmd_entry *`` (for tests)."""
        return ffi.cast("struct tcmu_cmd_entry *", self._base + self.entry_offset(cmd_id))

    def _publish_head(self, new_head: int) -> None:
        # UPDATE_HEAD: the kernel stores the head last, after the entry is complete.
        self._head = new_head % self.cmdr_size
        self._mb.cmd_head = self._head

    def _ring_space(self, cmd_size: int) -> bool:
        head, size = self._head, self.cmdr_size
        to_end = size - head
        needed = cmd_size if to_end >= cmd_size else cmd_size + to_end
        used = (head - self._last_cleaned) % size
        return size - used - 1 >= needed  # one byte kept free: full != empty

    def _insert_padding(self, cmd_size: int) -> int:
        to_end = self.cmdr_size - self._head
        if to_end < cmd_size:
            hdr = ffi.cast("struct tcmu_cmd_entry_hdr *", self._base + self.cmdr_off + self._head)
            hdr.len_op = make_len_op(to_end, TcmuOp.PAD)
            hdr.cmd_id = 0
            hdr.kflags = 0
            hdr.uflags = 0
            self._publish_head(self._head + to_end)
        return self._head

    def _alloc_id(self) -> int:
        if self._free_ids:
            return heapq.heappop(self._free_ids)
        if self._next_id > 0xFFFE:
            raise RingFull("out of command ids")
        self._next_id += 1
        return self._next_id - 1

    # -- completions ---------------------------------------------------------------------

    def completions(self) -> dict[int, Completion]:
        """Reap everything the handler completed since the last call, by cmd_id."""
        tail = int(self._mb.cmd_tail)
        size = self.cmdr_size
        if tail >= size or tail % TCMU_OP_ALIGN_SIZE:
            raise HandlerBug(f"cmd_tail {tail} is not a valid ring offset")
        if (tail - self._last_cleaned) % size > (self._head - self._last_cleaned) % size:
            raise HandlerBug(f"cmd_tail {tail} advanced past cmd_head {self._head}")
        done: dict[int, Completion] = {}
        while self._last_cleaned != tail:
            off = self.cmdr_off + self._last_cleaned
            entry = ffi.cast("struct tcmu_cmd_entry *", self._base + off)
            len_op = int(entry.hdr.len_op)
            length = len_op & ~TCMU_OP_MASK
            if length == 0 or (tail - self._last_cleaned) % size < length:
                raise HandlerBug(f"cmd_tail {tail} is not on an entry boundary")
            if len_op & TCMU_OP_MASK == TcmuOp.CMD:
                cmd_id = int(entry.hdr.cmd_id)
                cmd = self._inflight.pop(cmd_id, None)
                if cmd is None:
                    raise HandlerBug(f"cmd_id {cmd_id} not found, ring is broken")
                done[cmd_id] = self._complete(cmd_id, cmd, entry, off)
            self._last_cleaned = (self._last_cleaned + length) % size
        return done

    def _complete(self, cmd_id: int, cmd: _Inflight, entry: Any, off: int) -> Completion:
        """tcmu_handle_completion(): what the initiator would receive."""
        uflags = int(entry.hdr.uflags)
        status = int(entry.rsp.scsi_status)
        raw_read_len = int(entry.rsp.read_len)
        self._data.free(cmd.blocks)
        heapq.heappush(self._free_ids, cmd_id)
        if uflags & TCMU_UFLAG_UNKNOWN_OP:
            return Completion(cmd_id, CHECK_CONDITION, b"", b"", None, uflags)
        read_len = cmd.data_length
        valid = cmd.reads and bool(uflags & TCMU_UFLAG_READ_LEN) and raw_read_len != 0
        if valid:
            read_len = min(read_len, raw_read_len)
        sense = b""
        if status == CHECK_CONDITION:
            buf = bytes(self._mv[off + _SENSE_OFFSET : off + _SENSE_OFFSET + 96])
            sense = buf[: _sense_length(buf)]
            if not valid:
                return Completion(cmd_id, status, sense, b"", None, uflags)
        data = bytearray()
        for base, ln in cmd.in_iovs:
            n = min(ln, read_len - len(data))
            if n <= 0:
                break
            data += self._mv[base : base + n]
        return Completion(cmd_id, status, sense, bytes(data), read_len if valid else None, uflags)

    def reset_ring(self, err_level: int = 2) -> list[int]:
        """action/reset_ring: fail every in-flight command, empty the ring.

        Returns the failed cmd ids (BUSY for level 1, CHECK CONDITION for 2, as the
        kernel completes them to LIO; they never reach `completions`).
        """
        failed = sorted(self._inflight)
        for cmd in self._inflight.values():
            self._data.free(cmd.blocks)
        self._inflight.clear()
        self._free_ids = []
        self._next_id = 1
        self._head = self._last_cleaned = 0
        self._mb.cmd_tail = 0
        self._mb.cmd_head = 0
        del err_level  # only changes what LIO is told, not the ring
        return failed

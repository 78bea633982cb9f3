"""The userspace side of one TCMU command ring.

A `Ring` sits over the shared map (the uio mmap in production, an anonymous mmap or a
bytearray in tests), pulls the entries the kernel queued between ``cmd_tail`` and
``cmd_head``, runs each command through a SCSI engine and writes the response back in
place. It does no waiting and no notifying: `handlers.tcmu.device` owns the thread and
the uio file descriptor, so the same ring logic runs unchanged over the fake kernel.

Rules the code follows (see DESIGN.md, "TCMU UAPI", and the kernel's
``target_core_user.c``):

* Everything the command needs (CDB, iovecs) is copied *out* before the response is
  written, because ``rsp`` overlays ``req`` in the same bytes.
* ``cmd_tail`` is advanced after every entry, so a handler that dies mid-pass leaves the
  ring at the first unanswered command and a restarted handler resumes from there.
* Data-in never goes beyond the iovecs. A short transfer is reported with
  ``TCMU_UFLAG_READ_LEN``: without it the kernel sends the whole buffer (stale bytes
  from earlier commands) on GOOD, and drops the data entirely on CHECK CONDITION.
* Nothing from the map is trusted: entry lengths, iovec offsets and CDB offsets are
  bounds-checked, and engine exceptions become HARDWARE ERROR sense.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from handlers.scsi.engine import CHECK_CONDITION, LogicalUnit
from handlers.tcmu.command import (
    SAM_STAT_TASK_ABORTED,
    BadEntry,
    CommandIO,
    Request,
    internal_failure_sense,
)
from handlers.tcmu.uapi import (
    CMD_ENTRY_SIZE,
    HDR_SIZE,
    MAILBOX_SIZE,
    TCMU_MAILBOX_FLAG_CAP_READ_LEN,
    TCMU_MAILBOX_VERSION,
    TCMU_OP_ALIGN_SIZE,
    TCMU_OP_MASK,
    TMR_ENTRY_SIZE,
    TcmuOp,
    TcmuTmr,
    ffi,
)

log = logging.getLogger(__name__)

TmrListener = Callable[[int, tuple[int, ...]], None]
# Told about every command answered: (opcode, SCSI status, sense, seconds it took).
# Runs on the ring's thread, so it must be cheap (one histogram observe).
CommandListener = Callable[[int, int, bytes, float], None]


class RingError(Exception):
    """The map cannot be a TCMU ring (bad mailbox geometry): refuse to attach."""


@dataclass(slots=True)
class _AbortScan:
    """Look-ahead state of one `Ring.process` call: which queued commands are aborted."""

    pos: int  # ring offset the scan has reached
    seen: dict[int, int] = field(default_factory=dict)  # cmd_id -> ring offset
    aborted: set[int] = field(default_factory=set)  # ring offsets of aborted commands


@dataclass(slots=True)
class RingStats:
    """Counters for metrics; one instance per ring."""

    commands: int = 0
    pads: int = 0
    tmrs: int = 0
    aborted: int = 0
    engine_errors: int = 0
    bad_entries: int = 0
    malformed: int = 0


class Ring:
    """The command ring in `buf`, served by `engine` (one logical unit).

    `buf` must be writable and at least as large as the map the mailbox describes.
    `on_tmr` (optional) is told about every TMR entry: ``(tmr_type, cmd_ids)``;
    `on_command` (optional) about every command answered (metrics).
    Not thread-safe: exactly one thread calls `process` (commands on one LU are
    serialised by construction).
    """

    def __init__(
        self,
        buf: Any,
        engine: LogicalUnit,
        *,
        name: str = "tcmu",
        on_tmr: TmrListener | None = None,
        on_command: CommandListener | None = None,
    ) -> None:
        mv = memoryview(buf)
        if mv.readonly:
            raise RingError("the ring buffer must be writable")
        self._mv = mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv
        self._base = ffi.from_buffer("char[]", buf, require_writable=True)
        self._mb = ffi.cast("struct tcmu_mailbox *", self._base)
        self._engine = engine
        self._on_tmr = on_tmr
        self._on_command = on_command
        self.name = name
        self.stats = RingStats()
        self._closed = False
        self._last_malformed: tuple[int, int] | None = None

        self.size = len(self._mv)
        if self.size < MAILBOX_SIZE:
            raise RingError(f"{name}: map of {self.size} bytes has no room for a mailbox")
        self.version = int(self._mb.version)
        self.flags = int(self._mb.flags)
        self.cmdr_off = int(self._mb.cmdr_off)
        self.cmdr_size = int(self._mb.cmdr_size)
        # The data area follows the command ring (data_off = CMDR_OFF + cmdr_size).
        self.data_off = self.cmdr_off + self.cmdr_size
        if self.version != TCMU_MAILBOX_VERSION:
            log.warning(
                "%s: mailbox version %d, expected %d", name, self.version, TCMU_MAILBOX_VERSION
            )
        if (
            self.cmdr_off < MAILBOX_SIZE
            or self.cmdr_size < CMD_ENTRY_SIZE
            or self.cmdr_size % TCMU_OP_ALIGN_SIZE
            or self.data_off > self.size
        ):
            raise RingError(
                f"{name}: bad ring geometry cmdr_off={self.cmdr_off} "
                f"cmdr_size={self.cmdr_size} map={self.size}"
            )
        self.read_len_supported = bool(self.flags & TCMU_MAILBOX_FLAG_CAP_READ_LEN)
        map_addr = int(ffi.cast("uintptr_t", self._base))  # valid until close() releases it
        self._io = CommandIO(self._mv, self.data_off, self.read_len_supported, map_addr)

    # -- mailbox views -------------------------------------------------------------------

    @property
    def head(self) -> int:
        """``cmd_head``: where the kernel will queue its next entry."""
        return int(self._mb.cmd_head)

    @property
    def tail(self) -> int:
        """``cmd_tail``: the first entry userspace has not completed."""
        return int(self._mb.cmd_tail)

    @property
    def pending(self) -> bool:
        """True when the kernel has queued entries we have not completed."""
        return not self._closed and self._mb.cmd_head != self._mb.cmd_tail

    def close(self) -> None:
        """Drop our views of the buffer so the owner can unmap it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._mb = ffi.NULL
        ffi.release(self._base)
        self._mv.release()

    # -- the pass ------------------------------------------------------------------------

    def process(self, should_stop: Callable[[], bool] | None = None) -> int:
        """Complete every entry queued so far; return how many commands were answered.

        Runs until ``cmd_head`` stops moving. `should_stop` is polled between entries
        so a stop request lets the in-flight command finish and leaves the rest queued.
        A malformed entry ends the pass (logged once) with ``cmd_tail`` left on it; the
        kernel then needs a ring reset.
        """
        if self._closed:
            raise RingError(f"{self.name}: ring is closed")
        mb = self._mb
        size = self.cmdr_size
        answered = 0
        tail = int(mb.cmd_tail)
        scan = _AbortScan(tail)
        while True:
            head = int(mb.cmd_head)
            if tail == head:
                self._last_malformed = None
                return answered
            if head >= size or tail >= size or (head | tail) % TCMU_OP_ALIGN_SIZE:
                self._malformed(tail, head, f"head {head} / tail {tail} outside the ring")
                return answered
            if should_stop is not None and should_stop():
                return answered
            # Look ahead to cmd_head before every entry, so a TMR that arrived while the
            # previous command ran can still stop the commands it lists.
            self._scan_aborts(scan, head)
            off = self.cmdr_off + tail
            len_op = int(ffi.cast("struct tcmu_cmd_entry_hdr *", self._base + off).len_op)
            op = len_op & TCMU_OP_MASK
            length = len_op & ~TCMU_OP_MASK
            problem = self._check_entry(tail, head, op, length)
            if problem:
                self._malformed(tail, len_op, problem)
                return answered
            if op == TcmuOp.CMD:
                self._command(off, length, tail in scan.aborted)
                answered += 1
            elif op == TcmuOp.TMR:
                self._tmr(off)
            elif op == TcmuOp.PAD:
                self.stats.pads += 1
            else:
                log.warning("%s: skipping entry with unknown op %d at %d", self.name, op, tail)
            tail = (tail + length) % size
            mb.cmd_tail = tail

    def _check_entry(self, tail: int, head: int, op: int, length: int) -> str | None:
        """Why the entry at `tail` cannot be walked safely, or None."""
        if length < HDR_SIZE:
            return f"entry length {length}"
        if tail + length > self.cmdr_size:
            return f"entry of {length} bytes runs past the ring end"
        if length > (head - tail) % self.cmdr_size:
            return f"entry of {length} bytes runs past cmd_head {head}"
        if op == TcmuOp.CMD and length < CMD_ENTRY_SIZE:
            return f"CMD entry of {length} bytes has no room for a response"
        if op == TcmuOp.TMR and length < TMR_ENTRY_SIZE:
            return f"TMR entry of {length} bytes"
        return None

    def _malformed(self, tail: int, what: int, problem: str) -> None:
        self.stats.malformed += 1
        key = (tail, what)
        if key != self._last_malformed:
            self._last_malformed = key
            log.error(
                "%s: malformed ring at tail %d: %s; stopping this pass", self.name, tail, problem
            )

    def _scan_aborts(self, scan: _AbortScan, head: int) -> None:
        """Extend `scan` up to `head`, marking commands that a later TMR entry lists.

        The kernel queues a TMR *after* the commands it lists and keeps their ids
        allocated until we complete them, so an id names the latest CMD before the TMR.
        The scan is incremental: each entry is looked at once per `process` call.
        """
        size = self.cmdr_size
        pos = scan.pos
        while pos != head:
            off = self.cmdr_off + pos
            hdr = ffi.cast("struct tcmu_cmd_entry_hdr *", self._base + off)
            len_op = int(hdr.len_op)
            op = len_op & TCMU_OP_MASK
            length = len_op & ~TCMU_OP_MASK
            if self._check_entry(pos, head, op, length):
                break  # the main walk reports it when it gets there
            if op == TcmuOp.CMD:
                scan.seen[int(hdr.cmd_id)] = pos
            elif op == TcmuOp.TMR:
                for cmd_id in self._tmr_ids(off, length):
                    where = scan.seen.pop(cmd_id, None)
                    if where is not None:
                        scan.aborted.add(where)
            pos = (pos + length) % size
        scan.pos = pos

    def _tmr_ids(self, off: int, length: int) -> tuple[int, ...]:
        tmr = ffi.cast("struct tcmu_tmr_entry *", self._base + off)
        count = min(int(tmr.cmd_cnt), (length - TMR_ENTRY_SIZE) // 2)
        return tuple(int(tmr.cmd_ids[i]) for i in range(count))

    def _tmr(self, off: int) -> None:
        self.stats.tmrs += 1
        tmr = ffi.cast("struct tcmu_tmr_entry *", self._base + off)
        kind = int(tmr.tmr_type)
        ids = self._tmr_ids(off, int(tmr.hdr.len_op) & ~TCMU_OP_MASK)
        try:
            label = TcmuTmr(kind).name
        except ValueError:
            label = f"type {kind}"
        log.info("%s: TMR %s for cmd ids %s", self.name, label, list(ids))
        if self._on_tmr is not None:
            try:
                self._on_tmr(kind, ids)
            except Exception:
                log.exception("%s: TMR listener failed", self.name)

    # -- one command ---------------------------------------------------------------------

    def _command(self, off: int, length: int, aborted: bool) -> None:
        started = time.perf_counter()
        entry = ffi.cast("struct tcmu_cmd_entry *", self._base + off)
        io = self._io
        self.stats.commands += 1
        try:
            req = io.copy_out(entry, off, length)
        except BadEntry as exc:
            self.stats.bad_entries += 1
            log.error("%s: cmd %d: %s; answering HARDWARE ERROR", self.name, entry.hdr.cmd_id, exc)
            io.respond(entry, off, CHECK_CONDITION, internal_failure_sense(), 0)
            return
        if aborted:
            # The kernel ignores an aborted command's status but still needs the entry
            # completed to free its id and data blocks. TASK ABORTED says what happened,
            # and the engine never sees it: no side effect (think tape WRITE).
            self.stats.aborted += 1
            log.info("%s: cmd %d aborted by TMR before it ran", self.name, req.cmd_id)
            io.respond(entry, off, SAM_STAT_TASK_ABORTED, b"", 0)
            self._observe(req.cdb, SAM_STAT_TASK_ABORTED, b"", started)
            return
        status, sense, data, in_iovs = self._execute(req)
        read_len = io.scatter(data, in_iovs, status) if in_iovs else 0
        if status == CHECK_CONDITION and not sense:
            log.error("%s: cmd %d: CHECK CONDITION without sense", self.name, req.cmd_id)
            sense = internal_failure_sense()
        io.respond(entry, off, status, sense, read_len)
        self._observe(req.cdb, status, sense, started)

    def _observe(self, cdb: bytes, status: int, sense: bytes, started: float) -> None:
        if self._on_command is None or not cdb:
            return
        try:
            self._on_command(cdb[0], status, sense, time.perf_counter() - started)
        except Exception:
            # Metrics must never fail a command that has already been answered.
            log.exception("%s: command listener failed", self.name)

    def _execute(self, req: Request) -> tuple[int, bytes, memoryview, list[tuple[int, int]]]:
        """Run the engine: (status, sense, data-in, iovecs the data-in may fill).

        Anything the engine raises becomes HARDWARE ERROR sense. The entry does not say
        the data direction, so the engine's `wants_data_out` decides it; a write's
        buffer is never filled with data-in.
        """
        cdb = req.cdb
        try:
            wants_out = bool(self._engine.wants_data_out(cdb))
            data_out = self._io.gather(req.out_iovs) if (wants_out or req.bidi) else None
            resp = self._engine.execute(cdb, data_out)
            status = int(resp.status) & 0xFF
            sense = bytes(resp.sense)
            data = memoryview(resp.data).cast("B")
        except Exception:
            self.stats.engine_errors += 1
            log.exception(
                "%s: cmd %d opcode %#04x: engine failed",
                self.name,
                req.cmd_id,
                cdb[0] if cdb else -1,
            )
            return CHECK_CONDITION, internal_failure_sense(), memoryview(b""), []
        if wants_out and not req.bidi:
            return status, sense, data, []
        return status, sense, data, req.in_iovs

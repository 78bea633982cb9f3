"""The SBC-3 data path: READ/WRITE(6/10/12/16), WRITE AND VERIFY, VERIFY, SYNCHRONIZE
CACHE, PRE-FETCH, WRITE SAME(10/16), UNMAP, GET LBA STATUS and COMPARE AND WRITE.

Conventions (SBC-3 and what libiscsi's iscsi-test-cu checks):
- check order: CDB fields (protection fields must be 0, limits) -> LBA range (05/21/00,
  also for a transfer length of 0) -> write protection (07/27/00) -> data-out length;
- a transfer length of 0 moves nothing and is GOOD (READ/WRITE(6) mean 256 blocks);
- the data-out of a block write must be exactly what the CDB describes, else the command
  is refused as INVALID FIELD IN INFORMATION UNIT (05/0E/03, as LIO answers) before
  anything reaches the volume;
- a MISCOMPARE (0E/1D/00) carries the byte offset of the first differing byte in
  INFORMATION (VERIFY, WRITE AND VERIFY, COMPARE AND WRITE);
- with the caching page's WCE=0, every write is FUA.
"""

from __future__ import annotations

import struct

from handlers.scsi.opcodes import Op, ServiceActionIn16
from handlers.scsi.sbc_base import BlockCdb, ThinDiskBase, block_cdb
from handlers.scsi.sense import ScsiError, Sense
from handlers.scsi.spc import DataOut, allocation, command, usage

FF4 = (0xFF,) * 4
FF8 = (0xFF,) * 8

UNMAP_HEADER = struct.Struct(">HH4x")
"""UNMAP parameter list header: unmap data length, block descriptor data length, 4 rsvd."""

UNMAP_DESCRIPTOR = struct.Struct(">QI4x")
"""UNMAP block descriptor: LBA, number of logical blocks, 4 reserved (16 bytes)."""

LBA_STATUS_HEADER = struct.Struct(">I4x")
"""GET LBA STATUS parameter data header: parameter data length (n - 3), 4 reserved."""

LBA_STATUS_DESCRIPTOR = struct.Struct(">QIB3x")
"""LBA status descriptor: LBA, number of blocks, provisioning status, 3 reserved."""

MAPPED, DEALLOCATED = 0x0, 0x1
LBA_STATUS_MAX_DESCRIPTORS = 64
LBA_STATUS_WINDOW = 1 << 20  # blocks examined by one GET LBA STATUS
DPO, FUA = 0x10, 0x08
PATTERN_CHUNK_BYTES = 1 << 20  # WRITE SAME with a non-zero pattern writes this much a call


class DiskIO(ThinDiskBase):
    """Block data commands of the thin disk."""

    # ---- READ --------------------------------------------------------------------------

    @command(Op.READ_6, usage(0x08, 0x1F, 0xFF, 0xFF, 0xFF))
    def read_6(self, cdb: bytes, data_out: DataOut) -> bytes | None:
        return self._read(block_cdb(cdb))

    @command(Op.READ_10, usage(0x28, 0xF8, *FF4, 0, 0xFF, 0xFF))
    def read_10(self, cdb: bytes, data_out: DataOut) -> bytes | None:
        return self._read(block_cdb(cdb))

    @command(Op.READ_12, usage(0xA8, 0xF8, *FF4, *FF4, 0))
    def read_12(self, cdb: bytes, data_out: DataOut) -> bytes | None:
        return self._read(block_cdb(cdb))

    @command(Op.READ_16, usage(0x88, 0xF8, *FF8, *FF4, 0))
    def read_16(self, cdb: bytes, data_out: DataOut) -> bytes | None:
        return self._read(block_cdb(cdb))

    def _read(self, cmd: BlockCdb) -> bytes | None:
        self.check_protect(cmd)
        self.check_transfer(cmd)
        self.check_range(cmd.lba, cmd.blocks)
        if not cmd.blocks:
            return None
        with self.volume_errors():
            return self.volume.read(cmd.lba, cmd.blocks)

    # ---- WRITE -------------------------------------------------------------------------

    @command(Op.WRITE_6, usage(0x0A, 0x1F, 0xFF, 0xFF, 0xFF), data_out=True)
    def write_6(self, cdb: bytes, data_out: DataOut) -> None:
        self._write(block_cdb(cdb), data_out)

    @command(Op.WRITE_10, usage(0x2A, 0xF8, *FF4, 0, 0xFF, 0xFF), data_out=True)
    def write_10(self, cdb: bytes, data_out: DataOut) -> None:
        self._write(block_cdb(cdb), data_out)

    @command(Op.WRITE_12, usage(0xAA, 0xF8, *FF4, *FF4, 0), data_out=True)
    def write_12(self, cdb: bytes, data_out: DataOut) -> None:
        self._write(block_cdb(cdb), data_out)

    @command(Op.WRITE_16, usage(0x8A, 0xF8, *FF8, *FF4, 0), data_out=True)
    def write_16(self, cdb: bytes, data_out: DataOut) -> None:
        self._write(block_cdb(cdb), data_out)

    def _write(self, cmd: BlockCdb, data_out: DataOut, *, fua: bool | None = None) -> bool:
        """The shared write path; False when there was nothing to write."""
        self.check_protect(cmd)
        self.check_transfer(cmd)
        self.check_range(cmd.lba, cmd.blocks)
        if not cmd.blocks:
            return False
        self.check_writable()
        data = self.exact_data_out(data_out, cmd.blocks * self.block_size)
        with self.volume_errors():
            self.volume.write(cmd.lba, data, fua=self.fua(bool(cmd.flags & FUA)) or bool(fua))
        return True

    # ---- WRITE AND VERIFY / VERIFY ------------------------------------------------------

    @command(Op.WRITE_AND_VERIFY_10, usage(0x2E, 0xF2, *FF4, 0, 0xFF, 0xFF), data_out=True)
    def write_and_verify_10(self, cdb: bytes, data_out: DataOut) -> None:
        self._write_and_verify(block_cdb(cdb), data_out)

    @command(Op.WRITE_AND_VERIFY_12, usage(0xAE, 0xF2, *FF4, *FF4, 0), data_out=True)
    def write_and_verify_12(self, cdb: bytes, data_out: DataOut) -> None:
        self._write_and_verify(block_cdb(cdb), data_out)

    @command(Op.WRITE_AND_VERIFY_16, usage(0x8E, 0xF2, *FF8, *FF4, 0), data_out=True)
    def write_and_verify_16(self, cdb: bytes, data_out: DataOut) -> None:
        self._write_and_verify(block_cdb(cdb), data_out)

    def _write_and_verify(self, cmd: BlockCdb, data_out: DataOut) -> None:
        # Verification means "on the medium": the write is durable before it is read back
        # and compared (BYTCHK 0 and 1 both end in that comparison here).
        if not self._write(cmd, data_out, fua=True):
            return
        assert data_out is not None
        with self.volume_errors():
            stored = self.volume.read(cmd.lba, cmd.blocks)
        self._compare(stored, bytes(data_out))

    @command(Op.VERIFY_10, usage(0x2F, 0xF6, *FF4, 0, 0xFF, 0xFF), data_out=True)
    def verify_10(self, cdb: bytes, data_out: DataOut) -> None:
        self._verify(block_cdb(cdb), data_out)

    @command(Op.VERIFY_12, usage(0xAF, 0xF6, *FF4, *FF4, 0), data_out=True)
    def verify_12(self, cdb: bytes, data_out: DataOut) -> None:
        self._verify(block_cdb(cdb), data_out)

    @command(Op.VERIFY_16, usage(0x8F, 0xF6, *FF8, *FF4, 0), data_out=True)
    def verify_16(self, cdb: bytes, data_out: DataOut) -> None:
        self._verify(block_cdb(cdb), data_out)

    def _verify(self, cmd: BlockCdb, data_out: DataOut) -> None:
        self.check_protect(cmd)
        bytchk = (cmd.flags >> 1) & 0x03
        if bytchk == 0b10:
            raise ScsiError.cdb(1, 2)
        if bytchk:
            self.check_transfer(cmd)
        self.check_range(cmd.lba, cmd.blocks)
        if bytchk == 0b00:
            self._verify_medium(cmd.lba, cmd.blocks)
            return
        per_block = bytchk == 0b11  # one block of data-out compared with every block
        if not cmd.blocks:
            return
        want = self.block_size if per_block else cmd.blocks * self.block_size
        expected = bytes(self.exact_data_out(data_out, want))
        with self.volume_errors():
            stored = self.volume.read(cmd.lba, cmd.blocks)
        self._compare(stored, expected * cmd.blocks if per_block else expected)

    def _verify_medium(self, lba: int, blocks: int) -> None:
        """BYTCHK 0: every block must be readable (a corrupt chunk is a MEDIUM ERROR)."""
        step = self.max_transfer_blocks
        with self.volume_errors():
            for start in range(lba, lba + blocks, step):
                self.volume.read(start, min(step, lba + blocks - start))

    @staticmethod
    def _compare(stored: bytes, expected: bytes) -> None:
        if stored == expected:
            return
        offset = next(i for i, (a, b) in enumerate(zip(stored, expected, strict=True)) if a != b)
        raise ScsiError(Sense.MISCOMPARE, info=offset)

    # ---- SYNCHRONIZE CACHE ----------------------------------------------------------------

    @command(Op.SYNCHRONIZE_CACHE_10, usage(0x35, 0x02, *FF4, 0, 0xFF, 0xFF))
    def synchronize_cache_10(self, cdb: bytes, data_out: DataOut) -> None:
        self._synchronize(*struct.unpack_from(">I", cdb, 2), struct.unpack_from(">H", cdb, 7)[0])

    @command(Op.SYNCHRONIZE_CACHE_16, usage(0x91, 0x02, *FF8, *FF4, 0))
    def synchronize_cache_16(self, cdb: bytes, data_out: DataOut) -> None:
        self._synchronize(*struct.unpack_from(">QI", cdb, 2))

    def _synchronize(self, lba: int, blocks: int) -> None:
        # IMMED is accepted but the fence always completes before GOOD: an initiator that
        # asked for an early answer gets a later one, never a weaker guarantee. The range
        # only selects what must be durable; the volume flushes everything.
        self.check_range(lba, blocks)
        with self.volume_errors():
            self.volume.flush()

    # ---- PRE-FETCH ------------------------------------------------------------------------

    @command(Op.PRE_FETCH_10, usage(0x34, 0x02, *FF4, 0, 0xFF, 0xFF))
    def pre_fetch_10(self, cdb: bytes, data_out: DataOut) -> None:
        # Nothing is staged ahead of time (the volume caches on access): GOOD, as for a
        # cache without room, once the range is checked.
        self.check_range(*struct.unpack_from(">I", cdb, 2), struct.unpack_from(">H", cdb, 7)[0])

    @command(Op.PRE_FETCH_16, usage(0x90, 0x02, *FF8, *FF4, 0))
    def pre_fetch_16(self, cdb: bytes, data_out: DataOut) -> None:
        self.check_range(*struct.unpack_from(">QI", cdb, 2))

    # ---- WRITE SAME -----------------------------------------------------------------------

    @command(Op.WRITE_SAME_10, usage(0x41, 0xFE, *FF4, 0, 0xFF, 0xFF), data_out=True)
    def write_same_10(self, cdb: bytes, data_out: DataOut) -> None:
        self._write_same(block_cdb(cdb), data_out, ndob=False)

    @command(Op.WRITE_SAME_16, usage(0x93, 0xFF, *FF8, *FF4, 0), data_out=True)
    def write_same_16(self, cdb: bytes, data_out: DataOut) -> None:
        self._write_same(block_cdb(cdb), data_out, ndob=bool(cdb[1] & 0x01))

    def _write_same(self, cmd: BlockCdb, data_out: DataOut, *, ndob: bool) -> None:
        self.check_protect(cmd)
        if cmd.flags & 0x10:  # ANCHOR: anchored blocks are not supported (ANC_SUP=0)
            raise ScsiError.cdb(1, 4)
        if cmd.flags & 0x06:  # PBDATA / LBDATA (obsolete): no address patterns
            raise ScsiError.cdb(1, 2 if cmd.flags & 0x04 else 1)
        unmap = bool(cmd.flags & 0x08)
        blocks = cmd.blocks
        if blocks == 0:  # WSNZ=0: zero means "through the last block"
            self.check_range(cmd.lba, 0)
            blocks = self.num_blocks - cmd.lba
        self.check_range(cmd.lba, blocks)
        if blocks > self.blocks_of(self.limits.max_write_same_bytes):
            raise ScsiError.cdb(cmd.length_byte, 7)
        if blocks == 0:
            return
        self.check_writable()
        if ndob:  # no data-out buffer: the pattern is zeros
            self.exact_data_out(data_out, 0)
            pattern = bytes(self.block_size)
        else:
            pattern = bytes(self.exact_data_out(data_out, self.block_size))
        fua = self.fua(False)
        with self.volume_errors():
            if unmap or not any(pattern):
                # UNMAP asks for an unmap operation on every LBA (SBC-4 WRITE SAME: "write
                # ... or unmap"), whatever the block holds: deallocated blocks read back as
                # zeros (LBPRZ), as LIO's own backstores and libiscsi's WriteSame*.Unmap*
                # tests expect. Zeros without UNMAP: the volume writes zeroes as it likes.
                self.volume.write_zeroes(cmd.lba, blocks, unmap=unmap)
                if fua:
                    self.volume.flush()
                return
            step = max(1, PATTERN_CHUNK_BYTES // self.block_size)
            for start in range(cmd.lba, cmd.lba + blocks, step):
                n = min(step, cmd.lba + blocks - start)
                self.volume.write(start, pattern * n, fua=fua)

    # ---- UNMAP ------------------------------------------------------------------------------

    @command(Op.UNMAP, usage(0x42, 0x01, 0, 0, 0, 0, 0, 0xFF, 0xFF), data_out=True)
    def unmap(self, cdb: bytes, data_out: DataOut) -> None:
        if cdb[1] & 0x01:  # ANCHOR
            raise ScsiError.cdb(1, 0)
        length = struct.unpack_from(">H", cdb, 7)[0]
        if length == 0:
            return
        data = self.data_out(data_out, length)
        if length < UNMAP_HEADER.size:
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        data_length, bd_length = UNMAP_HEADER.unpack_from(data)
        if data_length + 2 > length or bd_length + UNMAP_HEADER.size > length:
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        count = bd_length // UNMAP_DESCRIPTOR.size  # a partial trailing descriptor is ignored
        if count > self.limits.max_unmap_descriptors:
            raise ScsiError.param(2, 7)
        self.check_writable()
        # Validate every descriptor before anything changes: one bad descriptor leaves
        # the volume untouched.
        ranges: list[tuple[int, int]] = []
        total = 0
        max_total = self.blocks_of(self.limits.max_unmap_bytes)
        for i in range(count):
            pos = UNMAP_HEADER.size + i * UNMAP_DESCRIPTOR.size
            lba, blocks = UNMAP_DESCRIPTOR.unpack_from(data, pos)
            self.check_range(lba, blocks)
            total += blocks
            if total > max_total:
                raise ScsiError.param(pos + 8, 7)
            if blocks:
                ranges.append((lba, blocks))
        with self.volume_errors():
            for lba, blocks in ranges:
                self.volume.unmap(lba, blocks)

    # ---- GET LBA STATUS ---------------------------------------------------------------------

    @command(Op.SERVICE_ACTION_IN_16, usage(0x9E, 0x12, *FF8, *FF4, 0),
             service_action=ServiceActionIn16.GET_LBA_STATUS)
    def get_lba_status(self, cdb: bytes, data_out: DataOut) -> bytes:
        lba, alloc = struct.unpack_from(">QI", cdb, 2)
        if lba >= self.num_blocks:
            raise ScsiError(Sense.LBA_OUT_OF_RANGE)
        span = min(self.num_blocks - lba, LBA_STATUS_WINDOW)
        with self.volume_errors():
            runs = self.volume.is_mapped(lba, span)
        body = bytearray()
        for start, count, mapped in _clipped_runs(runs, lba, lba + span):
            if len(body) // LBA_STATUS_DESCRIPTOR.size >= LBA_STATUS_MAX_DESCRIPTORS:
                break
            body += LBA_STATUS_DESCRIPTOR.pack(start, count, MAPPED if mapped else DEALLOCATED)
        head = LBA_STATUS_HEADER.pack(len(body) + LBA_STATUS_HEADER.size - 4)
        return allocation(head + body, alloc)

    # ---- COMPARE AND WRITE --------------------------------------------------------------------

    @command(Op.COMPARE_AND_WRITE, usage(0x89, 0xF8, *FF8, 0, 0, 0, 0xFF, 0),
             data_out=True)
    def compare_and_write(self, cdb: bytes, data_out: DataOut) -> None:
        lba, blocks = struct.unpack_from(">Q", cdb, 2)[0], cdb[13]
        cmd = BlockCdb(lba, blocks, cdb[1], 13)
        self.check_protect(cmd)
        if blocks > self.limits.max_compare_and_write_blocks:
            raise ScsiError.cdb(13, 7)
        self.check_range(lba, blocks)
        if not blocks:
            return
        self.check_writable()
        size = blocks * self.block_size
        data = bytes(self.exact_data_out(data_out, 2 * size))
        with self.volume_errors():
            # Atomic per volume (the volume holds its lock across compare and write), so
            # also against XCOPY writes arriving through another LU's thread.
            offset = self.volume.compare_and_write(lba, data[:size], data[size:])
            if offset is None and self.fua(bool(cdb[1] & FUA)):
                self.volume.flush()
        if offset is not None:
            raise ScsiError(Sense.MISCOMPARE, info=offset)


def _clipped_runs(runs: list[tuple[int, int, bool]], lo: int, hi: int
                  ) -> list[tuple[int, int, bool]]:
    """Runs clipped to [lo, hi), adjacent equal states merged, counts split to 32 bits."""
    merged: list[tuple[int, int, bool]] = []
    for start, count, mapped in sorted(runs):
        a, b = max(start, lo), min(start + count, hi)
        if a >= b:
            continue
        if merged and merged[-1][2] == mapped and merged[-1][0] + merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b - merged[-1][0], mapped)
        else:
            merged.append((a, b - a, mapped))
    out: list[tuple[int, int, bool]] = []
    for start, count, mapped in merged:
        while count > 0xFFFFFFFF:
            out.append((start, 0xFFFFFFFF, mapped))
            start, count = start + 0xFFFFFFFF, count - 0xFFFFFFFF
        out.append((start, count, mapped))
    return out

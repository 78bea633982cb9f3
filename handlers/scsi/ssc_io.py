"""The SSC data path: READ/WRITE(6), VERIFY(6), WRITE FILEMARKS, SPACE, LOCATE, READ POSITION,
ERASE, ALLOW OVERWRITE.

Sense conventions (SSC-4 4.2, what st, tar and LTFS rely on):
- a short or long record in variable mode: NO SENSE + ILI, INFORMATION = requested - actual
  (negative when the record was longer: the data is truncated); SILI hides only the short case;
- fixed mode: every block is one record of exactly the mode block size; residues are in blocks;
- a filemark ends a READ or SPACE: NO SENSE + FILEMARK 00/01, INFORMATION = residue, the
  position is past the filemark (in the direction of motion);
- end of data: BLANK CHECK 00/05, INFORMATION = residue;
- beginning of partition while spacing backward: NO SENSE + EOM 00/04, INFORMATION = residue;
- writes beyond early warning succeed and report NO SENSE + EOM 00/02 (INFORMATION 0);
  one that does not fit is not written: VOLUME OVERFLOW + EOM, INFORMATION = residue.
SPACE residues are magnitudes (positive also when spacing backward), as Linux st expects.
"""

from __future__ import annotations

import struct

from handlers.scsi.opcodes import Op
from handlers.scsi.sense import FieldPointer, ScsiError, Sense
from handlers.scsi.spc import DataOut, allocation, command, usage
from handlers.scsi.ssc_base import TapeDriveBase
from thur.tape import Medium, SpaceStop, TapeError, TapePosition

SHORT_POSITION = struct.Struct(">BBxxIIxBHI")
"""READ POSITION short form, 20 bytes (SSC-4 7.7.2): flags BOP/EOP/LOCU/BYCU/LOLU/PERR/BPEW,
partition, 2 reserved, first and last logical object location, reserved, logical objects in
buffer (24 bits: high byte + u16), bytes in buffer."""

LONG_POSITION = struct.Struct(">BxxxIQQQ")
"""READ POSITION long form, 32 bytes (SSC-4 7.7.3): flags BOP/EOP/MPU/LONU/BPEW, 3 reserved,
partition number, logical object number, logical file identifier, obsolete set identifier."""

EXTENDED_POSITION = struct.Struct(">BBHx3sQQQ")
"""READ POSITION extended form, 32 bytes (SSC-4 7.7.4): flags, partition, additional length
(1Ch), reserved, logical objects in buffer (24 bits), first and last logical object location,
bytes in buffer."""

BOP, EOP, PERR, BPEW = 0x80, 0x40, 0x02, 0x01


def transfer_length(cdb: bytes) -> int:
    """The 24-bit TRANSFER LENGTH / COUNT of a 6-byte CDB (bytes 2-4)."""
    return int.from_bytes(cdb[2:5], "big")


def signed24(cdb: bytes) -> int:
    return int.from_bytes(cdb[2:5], "big", signed=True)


class TapeIO(TapeDriveBase):
    """Sequential-access data commands of the drive."""

    # ---- READ / VERIFY ---------------------------------------------------------------

    @command(Op.READ_6, usage(0x08, 0x03, 0xFF, 0xFF, 0xFF), needs_medium=True)
    def read_6(self, cdb: bytes, data_out: DataOut) -> bytes | None:
        fixed, sili = bool(cdb[1] & 0x01), bool(cdb[1] & 0x02)
        medium = self._loaded()
        self._check_fixed(fixed)
        if fixed and sili:  # SSC-4: SILI with FIXED is an invalid combination
            raise ScsiError.cdb(1, 1)
        length = transfer_length(cdb)
        if length == 0:  # no motion, no data
            return None
        if fixed:
            return self._read_fixed(medium, length, count_host=True)
        return self._read_variable(medium, length, sili, count_host=True)

    @command(Op.VERIFY_6, usage(0x13, 0x3F, 0xFF, 0xFF, 0xFF), needs_medium=True)
    def verify_6(self, cdb: bytes, data_out: DataOut) -> None:
        if cdb[1] & 0x3A:  # BYTCMP (needs data-out), VBF, VLBPM, VTE: not supported
            raise ScsiError.cdb(1, 5 if cdb[1] & 0x38 else 1)
        fixed = bool(cdb[1] & 0x01)
        medium = self._loaded()
        self._check_fixed(fixed)
        length = transfer_length(cdb)
        if length == 0:
            return
        try:
            if fixed:
                self._read_fixed(medium, length, count_host=False)
            else:
                self._read_variable(medium, length, False, count_host=False)
        except ScsiError as err:
            err.data = b""  # VERIFY reads without transferring anything
            raise

    def _check_fixed(self, fixed: bool) -> None:
        if fixed and not self.block_length:  # FIXED=1 needs a mode-page block size
            raise ScsiError.cdb(1, 0)

    def _next_object(self, medium: Medium, residue: int, done: bytes = b"") -> bytes | None:
        """The next record as the host sees it (decrypted), or None for a filemark."""
        try:
            record = medium.read()
            encrypted = record is not None and medium.last_read_encrypted()
        except TapeError as err:
            raise self.tape_sense(err, info=residue, data=done) from err
        if record is None:
            return None
        return self.open_record(record, encrypted, info=residue, data=done)

    def _count_read(self, nbytes: int, host: bool) -> None:
        self.stats.records_read += 1
        self.stats.mount_read += nbytes
        if host:
            self.stats.host_read += nbytes

    def _read_variable(self, medium: Medium, length: int, sili: bool, *,
                       count_host: bool) -> bytes:
        record = self._next_object(medium, length)
        if record is None:
            raise ScsiError(Sense.FILEMARK, filemark=True, info=length)
        self._count_read(min(len(record), length), count_host)
        if len(record) == length or (sili and len(record) < length):
            return record  # a short record under SILI: GOOD with a short transfer
        # ILI: INFORMATION is requested - actual; negative (two's complement) when the
        # record was longer and its tail is lost.
        raise ScsiError(Sense.NO_SENSE, ili=True, info=length - len(record),
                        data=record[:length])

    def _read_fixed(self, medium: Medium, blocks: int, *, count_host: bool) -> bytes:
        size = self.block_length
        out = bytearray()
        for done in range(blocks):
            record = self._next_object(medium, blocks - done, bytes(out))
            if record is None:
                raise ScsiError(Sense.FILEMARK, filemark=True, info=blocks - done,
                                data=bytes(out))
            if len(record) != size:
                # The wrong-sized block is consumed but not transferred; the residue does
                # not count it as read.
                raise ScsiError(Sense.NO_SENSE, ili=True, info=blocks - done, data=bytes(out))
            self._count_read(size, count_host)
            out += record
        return bytes(out)

    # ---- WRITE / WRITE FILEMARKS -----------------------------------------------------

    @command(Op.WRITE_6, usage(0x0A, 0x01, 0xFF, 0xFF, 0xFF), data_out=True, needs_medium=True)
    def write_6(self, cdb: bytes, data_out: DataOut) -> None:
        fixed = bool(cdb[1] & 0x01)
        medium = self._loaded()
        self._check_fixed(fixed)
        count = transfer_length(cdb)
        size = self.block_length if fixed else count
        nbytes = count * size if fixed else count
        # The transport's data-out must be exactly what the CDB describes: a mismatch is
        # refused before anything reaches the cartridge (never a partial record).
        given = 0 if data_out is None else len(data_out)
        if given != nbytes:
            raise ScsiError.cdb(2, 7)
        if count == 0:
            return
        assert data_out is not None
        if fixed:
            records = [bytes(data_out[i : i + size]) for i in range(0, nbytes, size)]
        elif isinstance(data_out.obj, bytes) and len(data_out.obj) == nbytes:
            # The ring hands over a private copy (its gather): keep it, do not copy the
            # record a second time (up to megabytes per command).
            records = [data_out.obj]
        else:
            records = [bytes(data_out)]
        self._write_records(medium, records, fixed)

    def _write_records(self, medium: Medium, records: list[bytes], fixed: bool) -> None:
        early_warning = False
        for index, record in enumerate(records):
            stored, sealed = self.seal_record(record)
            try:
                early_warning = (medium.write(stored, encrypted=True) if sealed
                                 else medium.write(stored))
            except TapeError as err:
                residue = len(records) - index if fixed else len(record)
                raise self.tape_sense(err, info=residue) from err
            self.stats.host_written += len(record)
            self.stats.mount_written += len(record)
            self.stats.records_written += 1
        if early_warning:
            raise ScsiError(Sense.EARLY_WARNING, eom=True, info=0)

    @command(Op.WRITE_FILEMARKS_6, usage(0x10, 0x03, 0xFF, 0xFF, 0xFF), needs_medium=True)
    def write_filemarks_6(self, cdb: bytes, data_out: DataOut) -> None:
        if cdb[1] & 0x02:  # WSMK: setmarks are obsolete and not supported
            raise ScsiError.cdb(1, 1)
        self._write_filemarks(self._loaded(), transfer_length(cdb))

    @command(Op.WRITE_FILEMARKS_16,
             usage(0x80, 0x01, 0x00, 0xFF, *([0xFF] * 8), 0xFF, 0xFF, 0xFF),
             needs_medium=True)
    def write_filemarks_16(self, cdb: bytes, data_out: DataOut) -> None:
        if cdb[1] & 0x0E:  # WSMK, FCS, LCS: not supported
            raise ScsiError.cdb(1, 3)
        medium = self._loaded()
        self._check_explicit_position(medium, cdb[3], struct.unpack_from(">Q", cdb, 4)[0])
        self._write_filemarks(medium, int.from_bytes(cdb[12:15], "big"))

    def _check_explicit_position(self, medium: Medium, partition: int, object_id: int) -> None:
        """Explicit-address commands must name the current position."""
        with self.medium_errors():
            pos = medium.position()
        if partition != pos.partition:
            raise ScsiError.cdb(3, 7)
        if object_id != pos.object_id:
            raise ScsiError.cdb(4, 7)

    def _write_filemarks(self, medium: Medium, count: int) -> None:
        # Count 0 is a flush: everything acknowledged so far becomes durable.
        with self.medium_errors(info=count):
            early_warning = medium.write_filemarks(count)
        if early_warning and count:
            raise ScsiError(Sense.EARLY_WARNING, eom=True, info=0)

    # ---- SPACE -----------------------------------------------------------------------

    @command(Op.SPACE_6, usage(0x11, 0x0F, 0xFF, 0xFF, 0xFF), needs_medium=True)
    def space_6(self, cdb: bytes, data_out: DataOut) -> None:
        self._space(cdb[1] & 0x0F, signed24(cdb))

    @command(Op.SPACE_16, usage(0x91, 0x0F, 0, 0, *([0xFF] * 8), 0xFF, 0xFF, 0),
             needs_medium=True)
    def space_16(self, cdb: bytes, data_out: DataOut) -> None:
        if cdb[12] or cdb[13]:  # PARAMETER LENGTH: no parameter data is defined for us
            raise ScsiError.cdb(12, 7)
        self._space(cdb[1] & 0x0F, struct.unpack_from(">q", cdb, 4)[0])

    def _space(self, code: int, count: int) -> None:
        medium = self._loaded()
        if code == 3:  # end of data; the count is ignored
            with self.medium_errors():
                medium.space_eod()
            return
        if code not in (0, 1):  # sequential filemarks and setmarks are not supported
            raise ScsiError.cdb(1, 3)
        if count == 0:
            return
        with self.medium_errors():
            result = medium.space_records(count) if code == 0 else (
                medium.space_filemarks(count))
        if result.stop is SpaceStop.FILEMARK:
            raise ScsiError(Sense.FILEMARK, filemark=True, info=result.residue)
        if result.stop is SpaceStop.EOD:
            raise ScsiError(Sense.BLANK_CHECK_EOD, info=result.residue)
        if result.stop is SpaceStop.BOP:
            raise ScsiError(Sense.BOP, eom=True, info=result.residue)

    # ---- LOCATE ----------------------------------------------------------------------

    @command(Op.LOCATE_10, usage(0x2B, 0x07, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0xFF),
             needs_medium=True)
    def locate_10(self, cdb: bytes, data_out: DataOut) -> None:
        # BT (block address instead of logical object id): our block addresses are the
        # logical object numbers, so both forms mean the same thing.
        cp = bool(cdb[1] & 0x02)
        self._locate(cp, cdb[8], struct.unpack_from(">I", cdb, 3)[0], dest=0, pbyte=8)

    @command(Op.LOCATE_16, usage(0x92, 0x3B, 0x01, 0xFF, *([0xFF] * 8), 0, 0, 0),
             needs_medium=True)
    def locate_16(self, cdb: bytes, data_out: DataOut) -> None:
        dest = (cdb[1] >> 3) & 0x07
        if dest not in (0, 1, 3):  # object id, file id, end of data
            raise ScsiError.cdb(1, 5)
        cp = bool(cdb[1] & 0x02)
        self._locate(cp, cdb[3], struct.unpack_from(">Q", cdb, 4)[0], dest=dest, pbyte=3)

    def _locate(self, cp: bool, partition: int, target: int, *, dest: int, pbyte: int) -> None:
        medium = self._loaded()
        with self.medium_errors(field=FieldPointer(pbyte, 7)):
            if not cp:
                partition = medium.position().partition
            if dest == 3:
                medium.locate(partition, 0)
                medium.space_eod()
                return
            if dest == 0:
                medium.locate(partition, target)
                return
            medium.locate(partition, 0)  # logical file id: just past filemark `target`
            result = medium.space_filemarks(target) if target else None
        if result is not None and result.stop is not None:
            raise ScsiError(Sense.BLANK_CHECK_EOD)

    # ---- READ POSITION ---------------------------------------------------------------

    @command(Op.READ_POSITION, usage(0x34, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF), needs_medium=True)
    def read_position(self, cdb: bytes, data_out: DataOut) -> bytes:
        form = cdb[1] & 0x1F
        if form not in (0x00, 0x01, 0x06, 0x08):
            raise ScsiError.cdb(1, 4)
        medium = self._loaded()
        with self.medium_errors():
            pos = medium.position()
        flags = position_flags(pos)
        if form in (0x00, 0x01):
            # 01h asks for vendor-specific block ids: ours are the logical object numbers.
            obj = pos.object_id
            if obj > 0xFFFFFFFF:
                return SHORT_POSITION.pack(flags | PERR, pos.partition, 0, 0, 0, 0, 0)
            return SHORT_POSITION.pack(flags, pos.partition, obj, obj, 0, 0, 0)
        if form == 0x06:
            return LONG_POSITION.pack(flags & ~PERR, pos.partition, pos.object_id,
                                      pos.file_id, 0)
        data = EXTENDED_POSITION.pack(flags, pos.partition, 0x1C, bytes(3),
                                      pos.object_id, pos.object_id, 0)
        return allocation(data, struct.unpack_from(">H", cdb, 7)[0])

    # ---- ERASE / ALLOW OVERWRITE -----------------------------------------------------

    @command(Op.ERASE_6, usage(0x19, 0x03, 0, 0, 0), needs_medium=True)
    def erase_6(self, cdb: bytes, data_out: DataOut) -> None:
        # LONG erases to the end of the partition; a short erase writes EOD here. Both
        # leave nothing readable past the position, which is all the cartridge models.
        medium = self._loaded()
        with self.medium_errors():
            medium.erase()

    @command(Op.ALLOW_OVERWRITE, usage(0x82, 0, 0x0F, 0xFF, *([0xFF] * 8), 0, 0, 0),
             needs_medium=True)
    def allow_overwrite(self, cdb: bytes, data_out: DataOut) -> None:
        # There is no append-only write mode here, so nothing needs lifting: the command
        # is validated and accepted (LTFS sends it before rewriting its index).
        if cdb[2] & 0x0F > 2:
            raise ScsiError.cdb(2, 3)
        self._loaded()


def position_flags(pos: TapePosition) -> int:
    """BOP/EOP/BPEW flag bits of READ POSITION for a cartridge position."""
    # EOP means "between early warning and the end of the partition": only a position at
    # end of data knows it sits past the written bytes; programmable early warning is at
    # or before early warning, so it is passed too.
    beyond = pos.eod and (pos.bpew or pos.eop)
    return (BOP if pos.bop else 0) | (EOP | BPEW if beyond else 0)

"""Mode pages, log pages and the commands that reshape a cartridge (FORMAT MEDIUM, SET CAPACITY).

Medium partition page 11h is how partitions are made, by LTFS (mkltfs) and by `mt-st
mkpartition` alike: MODE SENSE 11h, edit it, MODE SELECT it, then FORMAT MEDIUM. Our page
reports POFM=1 ("partition on format medium"), which is what LTO-5 and later drives say and
what Linux st checks to decide that it must send FORMAT MEDIUM 01h after the MODE SELECT. A
MODE SELECT therefore only stages a layout; FORMAT MEDIUM 01h/02h applies it, 00h formats
one partition. The page always reports PSUM=11b (sizes in 10^PARTITION UNITS bytes): LTFS
keeps the PSUM bits it read and writes its sizes in units of 10^9, st switches to 10^9 units
when the drive reports PSUM=11b and otherwise writes MB.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from handlers.scsi.logpages import (
    BINARY_LIST,
    TSD,
    LogPage,
    LogParam,
    counter,
    tapealert_page,
)
from handlers.scsi.modepages import BlockDescriptor, ModePage, page, sense_field
from handlers.scsi.opcodes import Op
from handlers.scsi.sense import ScsiError, Sense
from handlers.scsi.spc import DataOut, command, usage
from handlers.scsi.ssc_base import (
    DENSITY_DEFAULT,
    DENSITY_NO_CHANGE,
    LTO8,
    MAX_BLOCK_LENGTH,
    MB,
    TapeDriveBase,
)
from thur.tape import MAX_PARTITIONS, Medium, early_warning_margin

ASCII_LIST = 0x01  # log parameter FORMAT AND LINKING 01b: ASCII format list

# Medium partition page 11h, byte 4.
FDP, SDP, IDP, PSUM_MASK, POFM = 0x80, 0x40, 0x20, 0x18, 0x04
PSUM_UNITS = 0x18  # PSUM 11b: sizes in 10^(PARTITION UNITS) bytes
PSUM_SCALE = {0x00: 1, 0x08: 10**3, 0x10: 10**6}  # 00b bytes, 01b KB, 10b MB
REST = 0xFFFF  # a partition size of FFFFh: "the rest of the medium"
PARTITION_PAGE_LENGTH = 8 + 2 * MAX_PARTITIONS

# A nominal LTO-8 data set, only to turn byte counts into the data-set counters of log
# page 17h; nothing depends on its exact value.
DATASET_BYTES = 5 * 1024 * 1024

PARTITION_RECORD = struct.Struct(">BxHI")
"""Volume statistics partition record: length (7), reserved, partition number, value (MB)."""


def _units_for(capacities: Sequence[int]) -> int:
    """The largest PARTITION UNITS exponent that states every size exactly in 16 bits."""
    for exp in (9, 6, 3, 0):
        if all(c % 10**exp == 0 and c // 10**exp < REST for c in capacities):
            return exp
    for exp in (0, 3, 6, 9, 12):
        if all(c // 10**exp < REST for c in capacities):
            return exp
    return 15


class TapePages(TapeDriveBase):
    """Mode/log pages of the drive and the cartridge-formatting commands."""

    def register_pages(self) -> None:
        m = self.modes
        m.block_descriptors = self._block_descriptors
        m.check_block_descriptor = self._check_block_descriptor
        m.apply_block_descriptor = self._apply_block_descriptor
        m.device_specific = self._device_specific
        # 0Fh data compression: DCE (on) changeable, DCC (capable); algorithm 01h both ways.
        m.add(ModePage(0x0F, page(0x0F, 16, {2: 0xC0, 3: 0x80, 7: 0x01, 11: 0x01}),
                       changeable=page(0x0F, 16, {2: 0x80})))
        # 10h device configuration: LOIS (object ids supported), EEG + SEW, compression 1;
        # byte 3 (active partition) follows the cartridge.
        self._device_config = m.add(ModePage(
            0x10, page(0x10, 16, {8: 0x40, 10: 0x18, 14: 0x01}),
            changeable=page(0x10, 16, {14: 0xFF}),
            validator=self._check_select_compression, provider=self._device_config_page))
        # 10h/01h device configuration extension: programmable early warning changeable
        # (accepted; early warning itself is the cartridge's fixed margin).
        m.add(ModePage(0x10, page(0x10, 32, subpage=0x01), subpage=0x01,
                       changeable=page(0x10, 32, {6: 0xFF, 7: 0xFF}, subpage=0x01)))
        self._partition_page = m.add(ModePage(
            0x11,
            page(0x11, PARTITION_PAGE_LENGTH,
                 {2: MAX_PARTITIONS - 1, 4: IDP | PSUM_UNITS | POFM, 5: 0x03, 6: 9}),
            changeable=page(0x11, PARTITION_PAGE_LENGTH,
                            {3: 0x01, 4: FDP | SDP | IDP | PSUM_MASK, 6: 0x0F,
                             8: 0xFF, 9: 0xFF, 10: 0xFF, 11: 0xFF}),
            validator=self._check_partition_page, on_change=self._stage_partitions))
        self.layout_staged = False
        self._sync_partition_page()

        self.logs.add(LogPage(0x0C, self._log_sequential_access, reset=self.stats.reset))
        self.logs.add(LogPage(0x17, self._log_volume_statistics))
        self.logs.add(LogPage(0x1B, self._log_data_compression))
        self.logs.add(LogPage(0x2E, tapealert_page(lambda: self.tapealerts),
                              after_read=self.tapealerts.clear))

    def on_load(self) -> None:
        super().on_load()
        self._sync_partition_page()

    def on_unload(self) -> None:
        super().on_unload()
        self._sync_partition_page()

    # ---- block descriptor and device configuration -----------------------------------

    def _block_descriptors(self) -> list[BlockDescriptor]:
        # With no cartridge, density 0: st shows "Density code 0x0 (default)" like real
        # drives without media; loaded, the medium's density (5Eh for LTO-8).
        medium = self._medium if self.ready else None
        density = medium.density_code if medium is not None else DENSITY_DEFAULT
        return [BlockDescriptor(density, 0, self.block_length)]

    def _check_block_descriptor(self, d: BlockDescriptor) -> None:
        if d.density not in (DENSITY_DEFAULT, DENSITY_NO_CHANGE, LTO8.code):
            raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST, field=sense_field(0, 7))
        if d.block_length > MAX_BLOCK_LENGTH:
            raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST, field=sense_field(5, 7))

    def _apply_block_descriptor(self, d: BlockDescriptor) -> None:
        self.block_length = d.block_length  # 0 selects variable-block mode

    def _device_specific(self) -> int:
        medium = self._medium if self.ready else None
        wp = 0x80 if medium is not None and medium.write_protected else 0
        return wp | 0x10  # buffered mode 1: GOOD may precede the write reaching the pool

    def _device_config_page(self) -> bytes:
        # The stored page follows what initiators read, so a MODE SELECT echoing the
        # active partition it was shown compares equal (that byte is not changeable).
        current = self._device_config.current
        current[3] = self._current_partition()
        return bytes(current)

    def _current_partition(self) -> int:
        medium = self._medium if self.ready else None
        return medium.position().partition if medium is not None else 0

    @staticmethod
    def _check_select_compression(new: bytes) -> None:
        if new[14] > 1:
            raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST, field=sense_field(14, 7))

    # ---- medium partition page 11h -----------------------------------------------------

    def _sync_partition_page(self) -> None:
        """Show the loaded cartridge's real layout (and drop any staged one)."""
        medium = self._medium if self.ready else None
        capacities = list(medium.partition_capacities()) if medium is not None else [0]
        exp = _units_for(capacities)
        cur = self._partition_page.current
        cur[3] = len(capacities) - 1
        cur[4] = IDP | PSUM_UNITS | POFM
        cur[6] = exp
        sizes = capacities + [0] * (MAX_PARTITIONS - len(capacities))
        cur[8:] = b"".join(struct.pack(">H", c // 10**exp) for c in sizes)
        self.layout_staged = False

    def _check_partition_page(self, new: bytes) -> None:
        flags = new[4]
        if bin(flags & (FDP | SDP | IDP)).count("1") > 1:
            raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST, field=sense_field(4, 7))
        medium = self._medium if self.ready else None
        total = medium.capacity_bytes if medium is not None else None
        if total is not None and not fits(partition_sizes(new, total), total):
            raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST, field=sense_field(8, 7))

    def _stage_partitions(self, new: bytes) -> None:
        self.layout_staged = True

    def staged_layout(self, medium: Medium) -> list[int] | None:
        """The partition sizes in bytes that FORMAT MEDIUM 01h/02h lays out."""
        sizes = partition_sizes(bytes(self._partition_page.current), medium.capacity_bytes)
        if not fits(sizes, medium.capacity_bytes):
            raise ScsiError(Sense.INVALID_FIELD_IN_PARAM_LIST, field=sense_field(8, 7))
        assert sizes is not None
        return None if sizes == [0] else sizes

    # ---- FORMAT MEDIUM / SET CAPACITY -------------------------------------------------

    @command(Op.FORMAT_MEDIUM, usage(0x04, 0x03, 0x0F, 0xFF, 0xFF), data_out=True,
             needs_medium=True)
    def format_medium(self, cdb: bytes, data_out: DataOut) -> None:
        fmt = cdb[2] & 0x0F
        if fmt > 2:
            raise ScsiError.cdb(2, 3)
        if cdb[3] or cdb[4]:  # TRANSFER LENGTH: we take no format parameters
            raise ScsiError.cdb(3, 7)
        medium = self._loaded()
        self._require_bop0(medium)
        # 00h: default format (one partition); 01h: partition as mode page 11h says;
        # 02h: default format then partition (LTFS's "destructive" format) - the same
        # thing here, since formatting always starts from an empty cartridge.
        sizes = None if fmt == 0 else self.staged_layout(medium)
        with self.medium_errors():
            medium.format(sizes)
        self._sync_partition_page()

    @command(Op.SET_CAPACITY, usage(0x0B, 0x01, 0, 0xFF, 0xFF), needs_medium=True)
    def set_capacity(self, cdb: bytes, data_out: DataOut) -> None:
        proportion = struct.unpack_from(">H", cdb, 3)[0]
        if proportion == 0:
            raise ScsiError.cdb(3, 7)
        medium = self._loaded()
        self._require_bop0(medium)
        with self.medium_errors():
            medium.set_capacity(proportion)
        self._sync_partition_page()

    def _require_bop0(self, medium: Medium) -> None:
        with self.medium_errors():
            pos = medium.position()
        if pos.partition != 0 or pos.object_id != 0:
            raise ScsiError(Sense.POSITION_PAST_BOM)

    # ---- log pages ---------------------------------------------------------------------

    def _log_sequential_access(self) -> list[LogParam]:
        s = self.stats
        params = [
            counter(0x0000, s.host_written),
            counter(0x0001, s.host_written),  # written to medium: no drive compression
            counter(0x0002, s.host_read),
            counter(0x0003, s.host_read),
        ]
        medium = self._medium if self.ready and not self.cleaning else None
        if medium is not None:
            pos = medium.position()
            cap = medium.partition_capacities()[pos.partition]
            used = medium.partition_used(pos.partition)
            params += [
                counter(0x0004, used // MB, 4),  # native capacity BOP to EOD
                counter(0x0005, (cap - early_warning_margin(cap)) // MB, 4),  # BOP to EW
            ]
        params.append(LogParam(0x0100, b"\x01" if self.cleaning_required else b"\x00"))
        return params

    def _log_volume_statistics(self) -> list[LogParam]:
        medium = self._medium if self.ready else None
        if medium is None:
            return [LogParam(0x0000, b"\x00")]  # page not valid without a cartridge
        s = self.stats
        caps = list(medium.partition_capacities())
        used = [medium.partition_used(p) for p in range(len(caps))]
        return [
            LogParam(0x0000, b"\x01"),
            counter(0x0001, medium.load_count + 1, 4),  # thread count, this mount included
            counter(0x0002, -(-sum(used) // DATASET_BYTES), 4),
            counter(0x0007, -(-s.mount_read // DATASET_BYTES), 4),
            counter(0x000E, s.mount_written // MB, 4),  # last mount MB written
            counter(0x000F, s.mount_read // MB, 4),
            counter(0x0016, sum(caps) // MB, 4),  # total native capacity (MB)
            counter(0x0017, sum(used) // MB, 4),  # total used native capacity (MB)
            LogParam(0x0042, medium.barcode.encode("ascii", "replace").ljust(32),
                     ASCII_LIST | TSD),
            LogParam(0x0080, b"\x01" if medium.write_protected else b"\x00"),
            LogParam(0x0081, b"\x01" if medium.worm else b"\x00"),
            self._partition_records(0x0202, caps),
            self._partition_records(0x0203, used),
            self._partition_records(0x0204, [max(c - u, 0) for c, u in zip(caps, used,
                                                                          strict=True)]),
        ]

    @staticmethod
    def _partition_records(code: int, values: Sequence[int]) -> LogParam:
        body = b"".join(PARTITION_RECORD.pack(7, p, min(v // MB, 0xFFFFFFFF))
                        for p, v in enumerate(values))
        return LogParam(code, body, BINARY_LIST | TSD)

    def _log_data_compression(self) -> list[LogParam]:
        # The drive itself does not compress (the chunk pool does, after dedup): ratios
        # are 1.00 and what goes to the medium equals what the host sent.
        s = self.stats
        params = [counter(0x0000, 100, 2), counter(0x0001, 100, 2)]
        for base, value in ((0x0002, s.host_read), (0x0004, s.host_read),
                            (0x0006, s.host_written), (0x0008, s.host_written)):
            params += [counter(base, value // MB, 4), counter(base + 1, value % MB, 4)]
        return params


def partition_sizes(page11: bytes, total: int) -> list[int] | None:
    """Partition sizes in bytes that a medium partition page asks for, or None if invalid.

    None as a *layout* (one full partition) is returned as [0]; None means the page is
    unusable. A trailing 0 means "the rest" (the `Medium.format` convention).
    """
    extra, flags = page11[3], page11[4]
    psum = flags & PSUM_MASK
    unit = 10 ** (page11[6] & 0x0F) if psum == PSUM_UNITS else PSUM_SCALE[psum]
    first, second = struct.unpack_from(">HH", page11, 8)
    if extra == 0:
        if flags & IDP and first not in (0, REST):
            return [first * unit]
        return [0]
    if not flags & IDP:
        # FDP/SDP: the device chooses; two equal halves.
        return [total // 2, 0] if total else [0, 0]
    if first == REST and second in (0, REST):
        return None
    if first == REST:
        size1 = second * unit
        return [total - size1, size1] if 0 < size1 < total else None
    if first == 0:
        return None
    return [first * unit, 0 if second == REST else second * unit]


def fits(sizes: list[int] | None, total: int) -> bool:
    """A layout that `Medium.format` can lay out on `total` bytes (trailing 0 = the rest)."""
    if sizes is None:
        return False
    fixed = sizes[:-1] if sizes[-1] == 0 else sizes
    return all(s > 0 for s in fixed) and (
        sum(fixed) < total if sizes[-1] == 0 else sum(fixed) <= total)

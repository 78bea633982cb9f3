"""`ThinDisk`: an SBC-3 thin-provisioned disk (peripheral type 00h) over a `thur.volume`
`Volume`.

The disk is assembled like the tape drive, from small parts over shared state:
- `sbc_base.ThinDiskBase`: the volume, `DiskLimits`, CDB decoding, write protection, and
  the ONE mapping of volume errors to sense (`volume_errors`);
- `sbc_io.DiskIO`: READ/WRITE, WRITE AND VERIFY, VERIFY, SYNCHRONIZE CACHE, PRE-FETCH,
  WRITE SAME, UNMAP, GET LBA STATUS, COMPARE AND WRITE;
- `sbc_xcopy.DiskCopy`: EXTENDED COPY (LID1), RECEIVE COPY RESULTS, VPD 8Fh;
- this module: identity, READ CAPACITY(10/16), READ DEFECT DATA(10/12) (always empty),
  START STOP UNIT, VPD B0h/B1h/B2h, mode pages (08h caching, 0Ah control with SWP, 1Ch)
  and the capacity-change unit attention.

Geometry: the logical block is the volume's block size; the physical block exponent is 0
(physical = logical). The volume's page size (64 KiB) is the unmap granularity and the
optimal transfer length granularity in VPD B0h rather than a physical block size, because
a 64 KiB "physical sector" would push file systems into 64 KiB sectors (XFS allows at
most 32 KiB) for no benefit: sub-page writes merge in the volume's cache.

Not implemented (answered INVALID COMMAND OPERATION CODE, not listed by RSOC): FORMAT
UNIT (a thin volume has nothing to format; UNMAP or WRITE SAME clear it), ORWRITE,
XDWRITE/XDREAD, SANITIZE, WRITE ATOMIC, protection information (RDPROTECT etc. must be 0).
"""

from __future__ import annotations

import logging
import struct

from handlers.scsi.modepages import BlockDescriptor, ModePage, page
from handlers.scsi.opcodes import Op, ServiceActionIn16
from handlers.scsi.sbc_base import DiskLimits, Resolver
from handlers.scsi.sbc_io import DiskIO
from handlers.scsi.sbc_xcopy import DiskCopy
from handlers.scsi.sense import ScsiError, Sense
from handlers.scsi.spc import DataOut, DeviceIdentity, allocation, command, usage
from thur.volume.protocol import Volume

DISK_VENDOR = "THUR"
DISK_PRODUCT = "VSA"
DISK_REVISION = "0100"
SBC3_VERSION_DESCRIPTOR = 0x04C0

READ_CAPACITY_10 = struct.Struct(">II")
"""READ CAPACITY(10) data: returned logical block address (last LBA), block length."""

READ_CAPACITY_16 = struct.Struct(">QIBBH16x")
"""READ CAPACITY(16) data, 32 bytes: last LBA, block length, P_TYPE/PROT_EN,
P_I_EXPONENT/LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT, LBPME/LBPRZ/LOWEST ALIGNED LBA."""

BLOCK_LIMITS = struct.Struct(">BBHIIIIIIIQ20x")
"""VPD B0h body (page length 3Ch): WSNZ, max COMPARE AND WRITE length, optimal transfer
length granularity, max transfer length, optimal transfer length, max prefetch length,
max unmap LBA count, max unmap block descriptor count, optimal unmap granularity,
UGAVALID/unmap granularity alignment, max WRITE SAME length, 20 reserved."""

LBPME, LBPRZ = 0x8000, 0x4000
LBPU, LBPWS, LBPWS10, LBPRZ_VPD = 0x80, 0x40, 0x20, 0x04
PROVISIONING_THIN = 0x02
WP, DPOFUA = 0x80, 0x10
POWER_CONDITIONS = frozenset({0x0, 0x1, 0x2, 0x3, 0x7, 0xA, 0xB})
DEFECT_FORMAT_RESERVED = 0b111  # the one DEFECT LIST FORMAT reserved in SBC-3 and SBC-4


class ThinDisk(DiskIO, DiskCopy):
    """A thin-provisioned SBC-3 logical unit.

    `resolver` maps the designator of an EXTENDED COPY target (the 16-byte NAA of another
    LU's VPD 83h, i.e. its `DeviceIdentity.naa()`) to that LU's volume; without it, copies
    stay within this volume.
    """

    def __init__(
        self,
        volume: Volume,
        identity: DeviceIdentity | None = None,
        *,
        resolver: Resolver | None = None,
        limits: DiskLimits | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(volume, identity or thin_disk_identity(volume.serial),
                         resolver=resolver, limits=limits, logger=logger)
        self.init_copy_manager()
        self.vpd_pages.update({
            0xB0: self._vpd_block_limits,
            0xB1: lambda: struct.pack(">HBBB55x", 0x0001, 0, 0, 0),  # non-rotating
            0xB2: self._vpd_provisioning,
        })
        self._caching = self.modes.add(ModePage(
            0x08, page(0x08, 20, {2: 0x04}),  # WCE: the volume has a write-back cache
            changeable=page(0x08, 20, {2: 0x04}),
        ))
        self._control = self.modes.add(ModePage(
            0x0A, page(0x0A, 12),
            changeable=page(0x0A, 12, {2: 0x04, 4: 0x08}),  # D_SENSE and SWP
        ))
        self.modes.device_specific = lambda: (WP if self.write_protected else 0) | DPOFUA
        self.modes.block_descriptors = self._block_descriptors
        self.modes.check_block_descriptor = self._check_block_descriptor
        self.modes.apply_block_descriptor = lambda d: None  # nothing in it is changeable
        self.modes.long_lba_supported = True

    # ---- the daemon's side ------------------------------------------------------------

    def capacity_changed(self) -> None:
        """The volume was resized: initiators learn it from 06/2A/09."""
        self.add_unit_attention(Sense.CAPACITY_CHANGED)

    # ---- identity -----------------------------------------------------------------------

    def inquiry_flags(self) -> tuple[int, int, int]:
        return 0x08, 0x00, 0x02  # 3PC (EXTENDED COPY); CMDQUE

    def version_descriptors(self) -> tuple[int, ...]:
        return (*super().version_descriptors(), SBC3_VERSION_DESCRIPTOR)

    def _vpd_block_limits(self) -> bytes:
        lim, bs = self.limits, self.block_size
        granularity = max(1, self.volume.page_size // bs)
        return BLOCK_LIMITS.pack(
            0,  # WSNZ=0: WRITE SAME with 0 blocks means "to the end"
            lim.max_compare_and_write_blocks,
            min(granularity, 0xFFFF),
            self.max_transfer_blocks,
            self.blocks_of(lim.optimal_transfer_bytes),
            0,
            self.blocks_of(lim.max_unmap_bytes),
            lim.max_unmap_descriptors,
            granularity,
            0x80000000,  # UGAVALID, alignment 0: pages start at LBA 0
            self.blocks_of(lim.max_write_same_bytes),
        )

    @staticmethod
    def _vpd_provisioning() -> bytes:
        # threshold exponent 0; UNMAP, WRITE SAME(16)+UNMAP, WRITE SAME(10)+UNMAP, unmapped
        # blocks read as zeros; ANC_SUP=0, DP=0; provisioning type thin.
        return bytes([0x00, LBPU | LBPWS | LBPWS10 | LBPRZ_VPD, PROVISIONING_THIN, 0x00])

    # ---- mode parameters ---------------------------------------------------------------

    @property
    def write_cache_enabled(self) -> bool:
        return bool(self._caching.current[2] & 0x04)

    def _block_descriptors(self) -> list[BlockDescriptor]:
        blocks = self.num_blocks
        if blocks > 0xFFFFFF:
            # A disk's short descriptor holds a 32-bit block count (FFFFFFFFh: too big);
            # with density FFh the shared general encoding gives exactly those bytes.
            return [BlockDescriptor(0xFF, 0xFFFFFF, self.block_size)]
        return [BlockDescriptor(0, blocks, self.block_size)]

    def _check_block_descriptor(self, d: BlockDescriptor) -> None:
        if d.block_length not in (0, self.block_size):  # the block size is fixed
            raise ScsiError.param(5, 7)

    # ---- READ CAPACITY ------------------------------------------------------------------

    @command(Op.READ_CAPACITY_10, usage(0x25, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01))
    def read_capacity_10(self, cdb: bytes, data_out: DataOut) -> bytes:
        if not cdb[8] & 0x01 and any(cdb[2:6]):  # an LBA without PMI is invalid
            raise ScsiError.cdb(2, 7)
        last = self.num_blocks - 1
        return READ_CAPACITY_10.pack(min(last, 0xFFFFFFFF), self.block_size)

    @command(Op.SERVICE_ACTION_IN_16, usage(0x9E, 0x10, *(0xFF,) * 12, 0x01),
             service_action=ServiceActionIn16.READ_CAPACITY_16)
    def read_capacity_16(self, cdb: bytes, data_out: DataOut) -> bytes:
        if not cdb[14] & 0x01 and any(cdb[2:10]):
            raise ScsiError.cdb(2, 7)
        data = READ_CAPACITY_16.pack(
            self.num_blocks - 1, self.block_size, 0,
            0,  # P_I_EXPONENT 0, logical blocks per physical block exponent 0
            LBPME | LBPRZ,  # thin provisioned, unmapped blocks read as zeros; aligned at 0
        )
        return allocation(data, struct.unpack_from(">I", cdb, 10)[0])

    # ---- READ DEFECT DATA -------------------------------------------------------------------

    @command(Op.READ_DEFECT_DATA_10, usage(0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF))
    def read_defect_data_10(self, cdb: bytes, data_out: DataOut) -> bytes:
        lists = _defect_list_request(cdb[2], byte=2)
        return allocation(bytes([0, lists, 0, 0]), struct.unpack_from(">H", cdb, 7)[0])

    @command(Op.READ_DEFECT_DATA_12, usage(0xB7, 0x1F, *(0xFF,) * 8, 0))
    def read_defect_data_12(self, cdb: bytes, data_out: DataOut) -> bytes:
        lists = _defect_list_request(cdb[1], byte=1)
        # GENERATION CODE 0 (not supported), DEFECT LIST LENGTH 0; the ADDRESS DESCRIPTOR
        # INDEX selects nothing in an empty list.
        header = struct.pack(">BBHI", 0, lists, 0, 0)
        return allocation(header, struct.unpack_from(">I", cdb, 6)[0])

    # ---- START STOP UNIT ------------------------------------------------------------------

    @command(Op.START_STOP_UNIT, usage(0x1B, 0x01, 0, 0x0F, 0xF7))
    def start_stop_unit(self, cdb: bytes, data_out: DataOut) -> None:
        condition = cdb[4] >> 4
        if condition not in POWER_CONDITIONS:
            raise ScsiError.cdb(4, 7)
        start, no_flush = bool(cdb[4] & 0x01), bool(cdb[4] & 0x04)
        # A virtual disk never spins down: it stays ready. Stopping it is a cache fence
        # (the host is about to power off), unless NO_FLUSH says otherwise.
        if condition == 0 and not start and not no_flush:
            with self.volume_errors():
                self.volume.flush()


def _defect_list_request(field: int, *, byte: int) -> int:
    """READ DEFECT DATA: a volume has no defects, so both lists are empty in any defined
    format. The answer echoes REQ_PLIST/REQ_GLIST as PLISTV/GLISTV (the lists asked for
    are valid, and empty) and the DEFECT LIST FORMAT; the reserved format is refused."""
    if field & 0x07 == DEFECT_FORMAT_RESERVED:
        raise ScsiError.cdb(byte, 2)
    return field & 0x1F


def thin_disk_identity(serial: str, *, revision: str = DISK_REVISION) -> DeviceIdentity:
    """The identity every Thur volume presents; only the serial differs between volumes."""
    return DeviceIdentity(DISK_VENDOR, DISK_PRODUCT, revision, serial)


__all__ = ["DiskLimits", "Resolver", "ThinDisk", "thin_disk_identity"]

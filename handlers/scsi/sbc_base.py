"""What every part of the thin disk shares: the volume, its limits, CDB decoding, and the
ONE place where the typed errors of `thur.volume` become SCSI sense.

`ThinDiskBase` holds the `Volume`, the block limits advertised in VPD B0h, and the
state the command mixins (`sbc_io`, `sbc_xcopy`) and the disk itself (`sbc.ThinDisk`)
operate on. Every `Volume` call in the engine runs inside `with self.volume_errors():`;
no command builds its own sense for a storage error.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from handlers.scsi.sense import ScsiError, Sense, SenseCode
from handlers.scsi.spc import DataOut, DeviceIdentity, ScsiDevice
from thur.volume.protocol import (
    BackendFailure,
    Backpressure,
    MediumCorrupt,
    OutOfRange,
    Volume,
    VolumeError,
    WriteProtected,
)

MIB = 1 << 20

Resolver = Callable[[bytes], "Volume | None"]
"""EXTENDED COPY: a CSCD designator (the designator bytes of an E4h descriptor, e.g. the
16-byte NAA of another LU of this daemon) to its volume, or None when it is not ours."""

# The one mapping of storage errors to sense. Subclasses of a listed error map like it;
# any other VolumeError is a HARDWARE ERROR (and is logged).
VOLUME_ERROR_SENSE: dict[type[VolumeError], SenseCode] = {
    OutOfRange: Sense.LBA_OUT_OF_RANGE,
    WriteProtected: Sense.WRITE_PROTECTED,
    MediumCorrupt: Sense.MEDIUM_ERROR,
    BackendFailure: Sense.HARDWARE_ERROR,
    Backpressure: Sense.NOT_READY_BACKPRESSURE,
}


def volume_sense(err: VolumeError) -> SenseCode:
    for klass in type(err).__mro__:
        found = VOLUME_ERROR_SENSE.get(klass)  # type: ignore[call-overload]
        if found is not None:
            return found
    return Sense.HARDWARE_ERROR


@dataclass(frozen=True, slots=True)
class DiskLimits:
    """What VPD B0h promises, in bytes where the unit would depend on the block size.

    The defaults fit the TCMU data area the daemon configures (8 MiB per command) and
    keep one UNMAP / WRITE SAME at 1 GiB, so a huge discard is split by the host into
    commands that each finish well inside the initiator's timeout.
    """

    max_transfer_bytes: int = 8 * MIB
    optimal_transfer_bytes: int = 1 * MIB
    max_unmap_bytes: int = 1024 * MIB
    max_unmap_descriptors: int = 256
    max_write_same_bytes: int = 1024 * MIB
    max_compare_and_write_blocks: int = 16  # at most 255 (one byte in VPD B0h)

    def __post_init__(self) -> None:
        if not 1 <= self.max_compare_and_write_blocks <= 255:
            raise ValueError("max_compare_and_write_blocks must be 1..255")


@dataclass(frozen=True, slots=True)
class BlockCdb:
    """The addressing fields of a READ/WRITE/VERIFY-style CDB."""

    lba: int
    blocks: int
    flags: int  # byte 1 (protection, DPO, FUA, BYTCHK ...); 0 for 6-byte CDBs
    length_byte: int  # where TRANSFER LENGTH starts, for field pointers


def block_cdb(cdb: bytes) -> BlockCdb:
    """Decode LBA / transfer length of a 6-, 10-, 12- or 16-byte block command."""
    size = len(cdb)
    if size == 6:
        lba = int.from_bytes(cdb[1:4], "big") & 0x1FFFFF
        return BlockCdb(lba, cdb[4] or 256, 0, 4)  # 0 means 256 blocks in READ/WRITE(6)
    if size == 10:
        lba, blocks = struct.unpack_from(">I", cdb, 2)[0], struct.unpack_from(">H", cdb, 7)[0]
        return BlockCdb(lba, blocks, cdb[1], 7)
    if size == 12:
        lba, blocks = struct.unpack_from(">II", cdb, 2)
        return BlockCdb(lba, blocks, cdb[1], 6)
    lba, blocks = struct.unpack_from(">QI", cdb, 2)
    return BlockCdb(lba, blocks, cdb[1], 10)


class ThinDiskBase(ScsiDevice):
    """The volume behind an SBC-3 logical unit; the command mixins build on it."""

    PERIPHERAL_TYPE = 0x00
    REMOVABLE = False

    def __init__(
        self,
        volume: Volume,
        identity: DeviceIdentity,
        *,
        resolver: Resolver | None = None,
        limits: DiskLimits | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(identity, logger=logger)
        self.volume = volume
        self.resolver = resolver
        self.limits = limits or DiskLimits()

    # ---- geometry ------------------------------------------------------------------------

    @property
    def block_size(self) -> int:
        return self.volume.block_size

    @property
    def num_blocks(self) -> int:
        return self.volume.num_blocks

    def blocks_of(self, nbytes: int) -> int:
        return max(1, nbytes // self.block_size)

    @property
    def max_transfer_blocks(self) -> int:
        return self.blocks_of(self.limits.max_transfer_bytes)

    def check_range(self, lba: int, blocks: int) -> None:
        """LBA OUT OF RANGE unless [lba, lba + blocks) lies on the volume."""
        if lba + blocks > self.num_blocks:
            raise ScsiError(Sense.LBA_OUT_OF_RANGE)

    def check_transfer(self, cmd: BlockCdb) -> None:
        if cmd.blocks > self.max_transfer_blocks:
            raise ScsiError.cdb(cmd.length_byte, 7)

    @staticmethod
    def check_protect(cmd: BlockCdb) -> None:
        """RDPROTECT / WRPROTECT / VRPROTECT: no protection information here."""
        if cmd.flags & 0xE0:
            raise ScsiError.cdb(1, 7)

    # ---- write protection and the write cache --------------------------------------------

    @property
    def software_write_protect(self) -> bool:
        return bool(self._control.current[4] & 0x08)  # control page SWP

    @property
    def write_protected(self) -> bool:
        return self.volume.write_protected or self.software_write_protect

    def check_writable(self) -> None:
        if self.write_protected:
            raise ScsiError(Sense.WRITE_PROTECTED)

    @property
    def write_cache_enabled(self) -> bool:
        """Caching mode page WCE; the disk subclass registers the page."""
        return True

    def fua(self, cmd_fua: bool) -> bool:
        """Whether a write must be durable when acknowledged: FUA, or WCE=0."""
        return cmd_fua or not self.write_cache_enabled

    # ---- data-out ------------------------------------------------------------------------

    def exact_data_out(self, data_out: DataOut, nbytes: int) -> memoryview:
        """The data-out of a block write: exactly what the CDB describes, or the command
        is refused before anything reaches the volume (never a partial write)."""
        given = 0 if data_out is None else len(data_out)
        if given != nbytes:
            raise ScsiError(Sense.INVALID_FIELD_IN_INFORMATION_UNIT)
        return data_out if data_out is not None else memoryview(b"")

    # ---- the one mapping of storage errors to sense ----------------------------------------

    def volume_error(self, err: VolumeError) -> ScsiError:
        sense = volume_sense(err)
        if sense in (Sense.HARDWARE_ERROR, Sense.MEDIUM_ERROR):
            self.log.error("volume %s: %s: %s", self.volume.name, type(err).__name__, err)
        return ScsiError(sense)

    @contextmanager
    def volume_errors(self) -> Iterator[None]:
        """Run a block of `Volume` calls, reporting its errors through `volume_error`."""
        try:
            yield
        except VolumeError as err:
            raise self.volume_error(err) from err

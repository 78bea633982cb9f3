"""The contract between a tape drive engine and a cartridge: `Medium`.

A cartridge holds one or two partitions. Each partition is a numbered
sequence of logical objects — records (bytes) and filemarks — ending at
end-of-data (EOD). Positions are *between* objects: position n means "before
object n"; position == number of objects means "at EOD".

Everything SCSI-specific (fixed-block mode, ILI, sense, residues in bytes)
belongs to the drive (handlers/scsi/ssc.py). The medium speaks in objects and
bytes and raises the typed errors in `thur.tape.errors`, which the drive maps
to sense in one place.

`thur.tape.memory.MemoryCartridge` is the reference implementation, and
`tests/unit/tape_contract.py` pins these semantics for every implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

LTO8_DENSITY = 0x5E
LTO8_NATIVE_CAPACITY = 12 * 10**12
MAX_PARTITIONS = 2
# Early warning: writes crossing this much before the end of a partition get
# EOM/early-warning sense, leaving room for the host to finish its backup set.
EARLY_WARNING_FRACTION = 50  # 1/50th of the partition (2 %)
HOST_ATTRIBUTE_FIRST = 0x0800
HOST_ATTRIBUTE_LAST = 0x0BFF


def early_warning_margin(partition_capacity: int) -> int:
    return partition_capacity // EARLY_WARNING_FRACTION


@dataclass(frozen=True, slots=True)
class TapePosition:
    """Where the medium is, as READ POSITION reports it."""

    partition: int = 0
    object_id: int = 0  # logical objects (records + filemarks) before the position
    file_id: int = 0  # filemarks before the position
    bop: bool = True  # at beginning of partition
    eod: bool = False  # at end of data
    bpew: bool = False  # the partition's written data is beyond early warning
    eop: bool = False  # the partition is full


class SpaceStop(Enum):
    """Why a SPACE ended before its count (None in `SpaceResult.stop`: it completed)."""

    FILEMARK = "filemark"
    EOD = "end-of-data"
    BOP = "beginning-of-partition"


@dataclass(frozen=True, slots=True)
class SpaceResult:
    residue: int = 0  # how many of the requested objects were NOT spaced over
    stop: SpaceStop | None = None


@runtime_checkable
class Medium(Protocol):
    """A cartridge as a drive sees it. Methods are called with the drive's LU
    serialised, one command at a time; implementations need no locking of their own
    against the drive (the library may read `position()` concurrently for status).
    """

    @property
    def barcode(self) -> str: ...
    @property
    def worm(self) -> bool: ...
    @property
    def write_protected(self) -> bool: ...
    @property
    def density_code(self) -> int: ...
    @property
    def capacity_bytes(self) -> int:
        """Total native capacity (the sum over partitions)."""
        ...

    def partition_capacities(self) -> Sequence[int]:
        """Capacity of each partition in bytes; the length is the partition count."""
        ...

    def partition_used(self, partition: int) -> int:
        """Bytes of records written in a partition (filemarks take no space)."""
        ...

    def position(self) -> TapePosition: ...

    # -- positioning ---------------------------------------------------------------

    def locate(self, partition: int, object_id: int) -> None:
        """Position before `object_id` in `partition` (changing partition if needed).
        Past EOD: positions at EOD and raises EndOfData. A partition that does not
        exist raises InvalidPartition and does not move."""
        ...

    def space_records(self, count: int) -> SpaceResult:
        """Space over `count` records (negative: backward). A filemark stops it, and is
        crossed: position ends on its far side in the direction of motion. EOD (forward)
        and BOP (backward) stop it without moving further."""
        ...

    def space_filemarks(self, count: int) -> SpaceResult:
        """Space over `count` filemarks (negative: backward), ending on the far side of
        the last one crossed. EOD (forward) and BOP (backward) stop it."""
        ...

    def space_eod(self) -> None: ...

    # -- data ----------------------------------------------------------------------

    def read(self) -> bytes | None:
        """The next object: a record's bytes, or None for a filemark; the position moves
        past it. At EOD raises EndOfData and does not move."""
        ...

    def last_read_encrypted(self) -> bool:
        """Whether the record the last successful `read()` returned was written with
        `encrypted=True` (False after a filemark, and before any read)."""
        ...

    def next_encrypted(self) -> bool | None:
        """The encrypted flag of the object at the position, without moving: None when it
        is a filemark or the position is at EOD."""
        ...

    def write(self, record: bytes, *, encrypted: bool = False) -> bool:
        """Write a record at the position, discarding every object after it (refused on
        WORM unless at EOD: WormViolation). Returns True when the partition is beyond
        early warning after the write. A record that does not fit raises VolumeOverflow
        and is not written. WriteProtected when the cartridge is write protected.

        `encrypted` is an opaque per-record flag kept with the record (the drive seals
        encrypted records itself; the medium stores the bytes as given, their length is
        what capacity counts) and reported back by `last_read_encrypted()` /
        `next_encrypted()`."""
        ...

    def write_filemarks(self, count: int) -> bool:
        """Write `count` filemarks (0 allowed), same truncation rules as `write`. When it
        returns, every record and filemark written so far is durable on local disk.
        Returns the early-warning flag like `write`."""
        ...

    def flush(self) -> None:
        """Make everything written so far durable on local disk."""
        ...

    def erase(self) -> None:
        """Discard everything from the position to the end of the partition
        (WormViolation on WORM, WriteProtected when protected)."""
        ...

    def format(self, partition_sizes: Sequence[int] | None = None) -> None:
        """Erase the whole cartridge and lay out partitions: None = one partition of the
        full capacity; [size0] or [size0, size1] in bytes, the last partition may be 0
        meaning "the rest". Positions at BOP of partition 0. WORM media that hold data
        are refused (WormViolation); InvalidPartition for a layout that does not fit."""
        ...

    def set_capacity(self, proportion: int) -> None:
        """SET CAPACITY: shrink the native capacity to proportion/65535 (1..65535) of the
        full size, as one partition; erases the cartridge. WORM holding data refused."""
        ...

    # -- medium auxiliary memory (MAM) ---------------------------------------------

    @property
    def load_count(self) -> int: ...

    def host_attributes(self) -> Mapping[int, bytes]:
        """Host-type MAM attributes (0800h-0BFFh) as stored, by attribute id."""
        ...

    def set_host_attribute(self, attribute_id: int, value: bytes) -> None:
        """Store (or with an empty value, delete) a host attribute; persisted with the
        cartridge metadata."""
        ...

    def unloaded(self) -> None:
        """The drive unloads the cartridge: flush and persist everything (durability
        point) and count the load for the next `load_count`."""
        ...

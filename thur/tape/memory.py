"""MemoryCartridge: the reference `Medium`, all in RAM.

Small and obviously right, so it can define the semantics that the pool-backed
cartridge and the drive engine are tested against. Not for production data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from thur.tape.errors import (
    EndOfData,
    InvalidPartition,
    VolumeOverflow,
    WormViolation,
    WriteProtected,
)
from thur.tape.medium import (
    HOST_ATTRIBUTE_FIRST,
    HOST_ATTRIBUTE_LAST,
    LTO8_DENSITY,
    MAX_PARTITIONS,
    SpaceResult,
    SpaceStop,
    TapePosition,
    early_warning_margin,
)

Obj = bytes | None  # a record, or None for a filemark


class _Sealed(bytes):
    """A record written with `encrypted=True` (a bytes subclass: it reads back as bytes)."""

    __slots__ = ()


class MemoryCartridge:
    def __init__(
        self,
        barcode: str,
        capacity_bytes: int,
        *,
        worm: bool = False,
        write_protected: bool = False,
    ) -> None:
        self._barcode = barcode
        self._native = capacity_bytes
        self._worm = worm
        self.write_protected_flag = write_protected
        self._capacities: list[int] = [capacity_bytes]
        self._parts: list[list[Obj]] = [[]]
        self._partition = 0
        self._pos = 0
        self._loads = 0
        self._attrs: dict[int, bytes] = {}
        self._last_encrypted = False
        self.flushes = 0

    # -- identity and geometry -----------------------------------------------------

    @property
    def barcode(self) -> str:
        return self._barcode

    @property
    def worm(self) -> bool:
        return self._worm

    @property
    def write_protected(self) -> bool:
        return self.write_protected_flag

    @property
    def density_code(self) -> int:
        return LTO8_DENSITY

    @property
    def capacity_bytes(self) -> int:
        return sum(self._capacities)

    def partition_capacities(self) -> Sequence[int]:
        return tuple(self._capacities)

    def partition_used(self, partition: int) -> int:
        self._check_partition(partition)
        return sum(len(o) for o in self._parts[partition] if o is not None)

    def position(self) -> TapePosition:
        objs = self._objs
        cap = self._capacities[self._partition]
        used = self.partition_used(self._partition)
        return TapePosition(
            partition=self._partition,
            object_id=self._pos,
            file_id=sum(1 for o in objs[: self._pos] if o is None),
            bop=self._pos == 0,
            eod=self._pos == len(objs),
            bpew=used >= cap - early_warning_margin(cap),
            eop=used >= cap,
        )

    @property
    def _objs(self) -> list[Obj]:
        return self._parts[self._partition]

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < len(self._parts):
            raise InvalidPartition(f"partition {partition} does not exist")

    # -- positioning ---------------------------------------------------------------

    def locate(self, partition: int, object_id: int) -> None:
        self._check_partition(partition)
        self._partition = partition
        objs = self._objs
        if object_id > len(objs):
            self._pos = len(objs)
            raise EndOfData(f"object {object_id} is past end-of-data ({len(objs)})")
        self._pos = object_id

    def space_records(self, count: int) -> SpaceResult:
        objs = self._objs
        step = 1 if count > 0 else -1
        for done in range(abs(count)):
            if step > 0 and self._pos == len(objs):
                return SpaceResult(abs(count) - done, SpaceStop.EOD)
            if step < 0 and self._pos == 0:
                return SpaceResult(abs(count) - done, SpaceStop.BOP)
            obj = objs[self._pos] if step > 0 else objs[self._pos - 1]
            self._pos += step
            if obj is None:
                return SpaceResult(abs(count) - done, SpaceStop.FILEMARK)
        return SpaceResult()

    def space_filemarks(self, count: int) -> SpaceResult:
        objs = self._objs
        remaining = abs(count)
        while remaining:
            if count > 0:
                if self._pos == len(objs):
                    return SpaceResult(remaining, SpaceStop.EOD)
                obj = objs[self._pos]
                self._pos += 1
            else:
                if self._pos == 0:
                    return SpaceResult(remaining, SpaceStop.BOP)
                obj = objs[self._pos - 1]
                self._pos -= 1
            if obj is None:
                remaining -= 1
        return SpaceResult()

    def space_eod(self) -> None:
        self._pos = len(self._objs)

    # -- data ----------------------------------------------------------------------

    def read(self) -> bytes | None:
        objs = self._objs
        if self._pos == len(objs):
            raise EndOfData("end of data")
        obj = objs[self._pos]
        self._pos += 1
        self._last_encrypted = isinstance(obj, _Sealed)
        return None if obj is None else bytes(obj)

    def last_read_encrypted(self) -> bool:
        return self._last_encrypted

    def next_encrypted(self) -> bool | None:
        objs = self._objs
        if self._pos == len(objs) or objs[self._pos] is None:
            return None
        return isinstance(objs[self._pos], _Sealed)

    def _prepare_write(self, nbytes: int) -> None:
        if self.write_protected_flag:
            raise WriteProtected(self._barcode)
        objs = self._objs
        if self._worm and self._pos < len(objs):
            raise WormViolation("WORM: writing before end-of-data would overwrite")
        used = sum(len(o) for o in objs[: self._pos] if o is not None)
        if used + nbytes > self._capacities[self._partition]:
            raise VolumeOverflow(f"{nbytes} bytes do not fit")
        del objs[self._pos :]

    def _beyond_early_warning(self) -> bool:
        cap = self._capacities[self._partition]
        return self.partition_used(self._partition) >= cap - early_warning_margin(cap)

    def write(self, record: bytes, *, encrypted: bool = False) -> bool:
        self._prepare_write(len(record))
        self._objs.append(_Sealed(record) if encrypted else bytes(record))
        self._pos += 1
        return self._beyond_early_warning()

    def write_filemarks(self, count: int) -> bool:
        if count:
            self._prepare_write(0)
            self._objs.extend([None] * count)
            self._pos += count
        self.flush()
        return self._beyond_early_warning()

    def flush(self) -> None:
        self.flushes += 1

    def erase(self) -> None:
        if self.write_protected_flag:
            raise WriteProtected(self._barcode)
        if self._worm:
            raise WormViolation("WORM: erase refused")
        del self._objs[self._pos :]

    def _refuse_worm_with_data(self) -> None:
        if self.write_protected_flag:
            raise WriteProtected(self._barcode)
        if self._worm and any(self._parts):
            raise WormViolation("WORM: the cartridge holds data")

    def format(self, partition_sizes: Sequence[int] | None = None) -> None:
        self._refuse_worm_with_data()
        total = self._native
        if partition_sizes is None:
            capacities = [total]
        else:
            sizes = list(partition_sizes)
            if not 1 <= len(sizes) <= MAX_PARTITIONS or any(s < 0 for s in sizes):
                raise InvalidPartition(f"unsupported layout {sizes}")
            if sizes[-1] == 0:
                sizes[-1] = total - sum(sizes[:-1])
            if sum(sizes) > total or any(s <= 0 for s in sizes):
                raise InvalidPartition(f"layout {sizes} does not fit {total} bytes")
            capacities = sizes
        self._capacities = capacities
        self._parts = [[] for _ in capacities]
        self._partition = self._pos = 0

    def set_capacity(self, proportion: int) -> None:
        if not 1 <= proportion <= 0xFFFF:
            raise InvalidPartition(f"capacity proportion {proportion} out of range")
        self._refuse_worm_with_data()
        self._native = max(1, self._native * proportion // 0xFFFF)
        self.format(None)

    # -- MAM -----------------------------------------------------------------------

    @property
    def load_count(self) -> int:
        return self._loads

    def host_attributes(self) -> Mapping[int, bytes]:
        return dict(self._attrs)

    def set_host_attribute(self, attribute_id: int, value: bytes) -> None:
        if not HOST_ATTRIBUTE_FIRST <= attribute_id <= HOST_ATTRIBUTE_LAST:
            raise ValueError(f"attribute {attribute_id:#06x} is not a host attribute")
        if value:
            self._attrs[attribute_id] = bytes(value)
        else:
            self._attrs.pop(attribute_id, None)

    def unloaded(self) -> None:
        self.flush()
        self._loads += 1

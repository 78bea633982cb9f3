"""`Cartridge`: the production `Medium`, a tape over the deduplicated chunk pool.

The tape semantics (positioning, reading, writing with truncation, filemarks,
capacity and early warning, partitions, WORM, MAM) over `CartridgeState`
(state.py), which owns the files, the commits and crash recovery. Positions
and spacing are answered from the on-disk record index in O(1) / O(log n)
(index.py); record bytes come from the partition's chunk stream (stream.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

from thur.tape.errors import (
    EndOfData,
    InvalidPartition,
    TapeError,
    VolumeOverflow,
    WormViolation,
)
from thur.tape.index import KIND_ENCRYPTED, KIND_FILEMARK, KIND_RECORD
from thur.tape.medium import (
    HOST_ATTRIBUTE_FIRST,
    HOST_ATTRIBUTE_LAST,
    MAX_PARTITIONS,
    SpaceResult,
    SpaceStop,
    TapePosition,
    early_warning_margin,
)
from thur.tape.state import MANIFEST, CartridgeState, Snapshot

__all__ = ["MANIFEST", "Cartridge", "Snapshot"]


class Cartridge(CartridgeState):
    """A pool-backed cartridge; implements `thur.tape.Medium` (see medium.py)."""

    def position(self) -> TapePosition:
        with self._lock:
            part, pos = self._cur, self._pos
            cap, used = self._capacity(), part.stream.length
            return TapePosition(
                partition=self._partition,
                object_id=pos,
                file_id=part.idx.filemarks_before(pos),
                bop=pos == 0,
                eod=pos == part.idx.count,
                bpew=used >= cap - early_warning_margin(cap),
                eop=used >= cap,
            )

    # ---- positioning ----------------------------------------------------------

    def locate(self, partition: int, object_id: int) -> None:
        with self._lock:
            part = self._part(partition)
            self._partition = partition
            n = part.idx.count
            if object_id > n:
                self._pos = n
                raise EndOfData(f"object {object_id} is past end-of-data ({n})")
            self._pos = max(0, object_id)

    def space_records(self, count: int) -> SpaceResult:
        with self._lock:
            idx, pos = self._cur.idx, self._pos
            if count > 0:
                end = min(pos + count, idx.count)
                f = idx.filemarks_before(pos)
                if idx.filemarks_before(end) > f:  # a filemark in [pos, end): stop past it
                    m = idx.first_reaching(pos + 1, end, f + 1)
                    self._pos = m
                    return SpaceResult(count - (m - 1 - pos), SpaceStop.FILEMARK)
                self._pos = end
                if end - pos < count:
                    return SpaceResult(count - (end - pos), SpaceStop.EOD)
            elif count < 0:
                c = -count
                start = max(pos - c, 0)
                f = idx.filemarks_before(pos)
                if idx.filemarks_before(start) < f:  # stop on the BOP side of the last one
                    j = idx.first_reaching(start + 1, pos, f) - 1
                    self._pos = j
                    return SpaceResult(c - (pos - 1 - j), SpaceStop.FILEMARK)
                self._pos = start
                if pos - start < c:
                    return SpaceResult(c - (pos - start), SpaceStop.BOP)
            return SpaceResult()

    def space_filemarks(self, count: int) -> SpaceResult:
        with self._lock:
            idx, pos = self._cur.idx, self._pos
            f = idx.filemarks_before(pos)
            if count > 0:
                if idx.filemarks - f < count:
                    self._pos = idx.count
                    return SpaceResult(count - (idx.filemarks - f), SpaceStop.EOD)
                self._pos = idx.first_reaching(pos + 1, idx.count, f + count)
            elif count < 0:
                c = -count
                if f < c:
                    self._pos = 0
                    return SpaceResult(c - f, SpaceStop.BOP)
                self._pos = idx.first_reaching(1, pos, f - c + 1) - 1
            return SpaceResult()

    def space_eod(self) -> None:
        with self._lock:
            self._pos = self._cur.idx.count

    # ---- data -----------------------------------------------------------------

    def read(self) -> bytes | None:
        with self._lock:
            part = self._cur
            if self._pos >= part.idx.count:
                raise EndOfData("end of data")
            offset, _fm, length, kind = part.idx.entry(self._pos)
            data = None if kind == KIND_FILEMARK else part.stream.read(offset, length)
            self._pos += 1
            self._last_encrypted = kind == KIND_ENCRYPTED
            return data

    def last_read_encrypted(self) -> bool:
        with self._lock:
            return self._last_encrypted

    def next_encrypted(self) -> bool | None:
        with self._lock:
            idx = self._cur.idx
            if self._pos >= idx.count:
                return None
            kind = idx.entry(self._pos)[3]
            return None if kind == KIND_FILEMARK else kind == KIND_ENCRYPTED

    def _prepare_write(self, nbytes: int) -> None:
        self._check_writable()
        part = self._cur
        if self._m.worm and self._pos < part.idx.count:
            raise WormViolation("WORM: writing before end-of-data would overwrite")
        if part.idx.stream_offset(self._pos) + nbytes > self._capacity():
            raise VolumeOverflow(f"{nbytes} bytes do not fit")
        self._truncate(self._pos)

    def _beyond_early_warning(self) -> bool:
        cap = self._capacity()
        return self._cur.stream.length >= cap - early_warning_margin(cap)

    def write(self, record: bytes, *, encrypted: bool = False) -> bool:
        with self._lock:
            self._prepare_write(len(record))
            part = self._cur
            part.stream.append(record)  # may refuse (Backpressure) before accepting
            part.idx.append_record(len(record), KIND_ENCRYPTED if encrypted else KIND_RECORD)
            self._pos += 1
            return self._beyond_early_warning()

    def write_filemarks(self, count: int) -> bool:
        if count < 0:
            raise ValueError("filemark count must not be negative")
        with self._lock:
            if count:
                self._prepare_write(0)
                # Store the records' chunks first: if the pool refuses, the command
                # fails before any filemark exists (a host retry must not double them).
                self._cur.stream.finish()
                self._cur.idx.append_filemarks(count)
                self._pos += count
            self._commit()
            return self._beyond_early_warning()

    def flush(self) -> None:
        with self._lock:
            if not self._closed:
                self._commit()

    def erase(self) -> None:
        with self._lock:
            self._check_writable()
            if self._m.worm:
                raise WormViolation("WORM: erase refused")
            self._truncate(self._pos)

    # ---- formatting -------------------------------------------------------------

    def _refuse_worm_with_data(self) -> None:
        self._check_writable()
        if self._m.worm and any(p.idx.count for p in self._parts):
            raise WormViolation("WORM: the cartridge holds data")

    def format(self, partition_sizes: Sequence[int] | None = None) -> None:
        with self._lock:
            self._refuse_worm_with_data()
            total = self._m.native_capacity
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
            self._relayout(capacities)

    def set_capacity(self, proportion: int) -> None:
        if not 1 <= proportion <= 0xFFFF:
            raise InvalidPartition(f"capacity proportion {proportion} out of range")
        with self._lock:
            self._refuse_worm_with_data()
            self._m.native_capacity = max(1, self._m.full_capacity * proportion // 0xFFFF)
            self._relayout([self._m.native_capacity])

    # ---- MAM ----------------------------------------------------------------------

    @property
    def load_count(self) -> int:
        return self._m.load_count

    def host_attributes(self) -> Mapping[int, bytes]:
        with self._lock:
            return dict(self._m.host_attributes)

    def set_host_attribute(self, attribute_id: int, value: bytes) -> None:
        if not HOST_ATTRIBUTE_FIRST <= attribute_id <= HOST_ATTRIBUTE_LAST:
            raise ValueError(f"attribute {attribute_id:#06x} is not a host attribute")
        with self._lock:
            self._check_writable()
            if value:
                self._m.host_attributes[attribute_id] = bytes(value)
            else:
                self._m.host_attributes.pop(attribute_id, None)
            self._commit(force=True)

    def set_write_protected(self, protected: bool) -> None:
        with self._lock:
            self._m.write_protected = protected
            self._commit(force=True)

    def unloaded(self) -> None:
        with self._lock:
            self._m.load_count += 1
            self._commit(force=True)

    def __enter__(self) -> Cartridge:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(TapeError):
            self.close()

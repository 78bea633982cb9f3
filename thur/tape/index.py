"""The on-disk record index and chunk map of one cartridge partition.

Both are files of fixed-size entries with no header (entry i lives at byte
i * size), so any entry is one `pread` away and a binary search costs
O(log n) reads of the page cache; nothing is kept in memory per object. The
format version and the number of valid entries live in the cartridge manifest
(manifest.py): bytes past the committed count are leftovers of writes that
were never committed (or were truncated away) and are ignored, then trimmed
when the cartridge is opened.

Record index, `p<n>.index`, version 1 (`RECORD`, little-endian, 24 bytes)::

    offset  size  field
    0       8     offset            stream offset of the record's first byte;
                                    for a filemark, the stream length before it
    8       8     filemarks_before  filemarks among the objects before this one
    16      4     length            record bytes (0 for a filemark)
    20      1     kind              0 record, 1 filemark, 2 encrypted record
    21      3     reserved          0

Kind 2 was added without a version bump: it only appears in cartridges written
by a drive with data encryption on, and every older entry (0 or 1) means what
it always meant.

Chunk map, `p<n>.chunks`, version 1 (`CHUNK`, little-endian, 64 bytes)::

    offset  size  field
    0       8     offset    stream offset of the chunk's first byte
    8       4     length    plaintext bytes
    12      4     reserved  0
    16      32    chunk id  BLAKE3-256 of the plaintext (the pool key)
    48      16    reserved  0

Chunk map entries are 64 bytes so that one never straddles a 512-byte sector:
the only in-place overwrite of a committed entry (re-chunking after a
truncation, see stream.py) is then a single-sector write.

Why files and not sqlite3: entries are appended in stream order and looked up
by number or by a monotonic key, which is exactly what a flat array on disk
does best; appends batch into one `pwrite` per 256 KiB and a durability point
costs one `fdatasync` per file, with no per-record transaction or B-tree.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

from thur.fsutil import pwrite_all

RECORD = struct.Struct("<QQIB3x")
CHUNK = struct.Struct("<QI4x32s16x")
KIND_RECORD = 0
KIND_FILEMARK = 1
KIND_ENCRYPTED = 2  # a record written with `encrypted=True` (opaque to the cartridge)
SPILL_BYTES = 256 * 1024  # pending entries are written (not synced) past this
_BLOCK_ENTRIES = 256  # entries read per cache block


class EntryFile:
    """An array of fixed-size entries: a file prefix plus an in-RAM pending tail.

    Truncation is logical (later appends overwrite the file in place): the
    bytes past the logical end may still be needed by a committed manifest
    until the next durability point. `low_water` is the smallest entry index
    changed (appended, overwritten or cut) since `take_dirty()`, for
    incremental replication.
    """

    def __init__(self, path: Path, entry_size: int, count: int) -> None:
        self.path = path
        self.size = entry_size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        have = os.fstat(self._fd).st_size // entry_size
        if have < count:
            self.close()
            raise ValueError(f"{path}: {have} entries on disk, manifest says {count}")
        os.ftruncate(self._fd, count * entry_size)  # drop what was never committed
        self._on_disk = count
        self._pending = bytearray()
        self._block: tuple[int, bytes] = (-1, b"")
        self._synced = True
        self.low_water = count

    @property
    def count(self) -> int:
        return self._on_disk + len(self._pending) // self.size

    def append(self, raw: bytes) -> None:
        self._pending += raw
        if len(self._pending) >= SPILL_BYTES:
            self.spill()

    def raw(self, i: int) -> bytes:
        """Entry i as bytes (i < count)."""
        size = self.size
        if i >= self._on_disk:
            at = (i - self._on_disk) * size
            return bytes(self._pending[at : at + size])
        return self.file_raw(i)

    def file_raw(self, i: int) -> bytes:
        """Entry i as the file holds it, even past the logical end."""
        size = self.size
        block = i // _BLOCK_ENTRIES
        cached, data = self._block
        if cached != block:
            data = os.pread(self._fd, _BLOCK_ENTRIES * size, block * _BLOCK_ENTRIES * size)
            self._block = (block, data)
        at = (i - block * _BLOCK_ENTRIES) * size
        if at + size > len(data):
            raise ValueError(f"{self.path}: entry {i} is not on disk")
        return data[at : at + size]

    def read_range(self, start: int, stop: int) -> bytes:
        """Entries [start, stop) of the file itself (for replication and GC)."""
        size = self.size
        return os.pread(self._fd, (stop - start) * size, start * size)

    def truncate(self, n: int) -> None:
        if n >= self._on_disk:
            del self._pending[(n - self._on_disk) * self.size :]
        else:
            self._pending.clear()
            self._on_disk = n
            self._block = (-1, b"")
        self.low_water = min(self.low_water, n)

    def spill(self) -> None:
        if not self._pending:
            return
        start = self._on_disk
        at = start * self.size
        pwrite_all(self._fd, self._pending, at)
        self._on_disk += len(self._pending) // self.size
        self._pending.clear()
        self._block = (-1, b"")
        self._synced = False
        self.low_water = min(self.low_water, start)

    def sync(self) -> None:
        self.spill()
        if not self._synced:
            os.fdatasync(self._fd)
            self._synced = True

    def take_dirty(self, reset_to: int) -> int:
        """Return the low-water mark and start a new dirty period at `reset_to`."""
        low, self.low_water = self.low_water, reset_to
        return low

    def reset(self) -> None:
        """Empty the file (format)."""
        self._pending.clear()
        self._on_disk = 0
        self._block = (-1, b"")
        os.ftruncate(self._fd, 0)
        self._synced = False
        self.low_water = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        # A safety net: an index dropped without close() (an error path) does not leak its fd.
        if getattr(self, "_fd", -1) >= 0:
            self.close()


class RecordIndex(EntryFile):
    """Logical objects of a partition: `F(j)` = filemarks before position j in O(1)."""

    def __init__(self, path: Path, count: int) -> None:
        super().__init__(path, RECORD.size, count)
        self.filemarks = 0  # F(count)
        self.stream_end = 0  # stream bytes at EOD
        if count:
            off, fm, length, kind = self.entry(count - 1)
            self.filemarks = fm + (kind == KIND_FILEMARK)
            self.stream_end = off + length

    def entry(self, i: int) -> tuple[int, int, int, int]:
        return RECORD.unpack(self.raw(i))  # type: ignore[return-value]

    def append_record(self, length: int, kind: int = KIND_RECORD) -> None:
        self.append(RECORD.pack(self.stream_end, self.filemarks, length, kind))
        self.stream_end += length

    def append_filemarks(self, count: int) -> None:
        fm, off = self.filemarks, self.stream_end
        self.append(b"".join(RECORD.pack(off, fm + k, 0, KIND_FILEMARK) for k in range(count)))
        self.filemarks += count

    def filemarks_before(self, j: int) -> int:
        return self.filemarks if j >= self.count else self.entry(j)[1]

    def stream_offset(self, j: int) -> int:
        return self.stream_end if j >= self.count else self.entry(j)[0]

    def truncate(self, n: int) -> None:
        if n < self.count:
            self.filemarks = self.filemarks_before(n)
            self.stream_end = self.stream_offset(n)
        super().truncate(n)

    def reset(self) -> None:
        super().reset()
        self.filemarks = self.stream_end = 0

    def first_reaching(self, lo: int, hi: int, target: int) -> int:
        """Smallest j in [lo, hi] with F(j) >= target (F(hi) >= target is assumed)."""
        while lo < hi:
            mid = (lo + hi) // 2
            if self.filemarks_before(mid) >= target:
                hi = mid
            else:
                lo = mid + 1
        return lo


class ChunkMap(EntryFile):
    """Chunks covering a partition's stream, in stream order."""

    def __init__(self, path: Path, count: int) -> None:
        super().__init__(path, CHUNK.size, count)
        self.end = 0  # stream offset just past the last chunk
        if count:
            off, length, _cid = self.entry(count - 1)
            self.end = off + length
        self._hint = 0

    def entry(self, i: int) -> tuple[int, int, bytes]:
        return CHUNK.unpack(self.raw(i))  # type: ignore[return-value]

    def add(self, length: int, cid: bytes) -> None:
        self.append(CHUNK.pack(self.end, length, cid))
        self.end += length

    def find(self, x: int) -> int:
        """Index of the chunk holding stream offset x (x < end)."""
        h = self._hint
        for i in (h, h + 1):  # sequential reads stay in or next to the last chunk
            if i < self.count:
                off, length, _ = self.entry(i)
                if off <= x < off + length:
                    self._hint = i
                    return i
        lo, hi = 0, self.count - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.entry(mid)[0] <= x:
                lo = mid
            else:
                hi = mid - 1
        self._hint = lo
        return lo

    def needed(self, x: int) -> int:
        """How many leading chunks it takes to cover [0, x) (x <= end)."""
        if x <= 0:
            return 0
        return self.find(x - 1) + 1

    def truncate(self, n: int) -> None:
        if n < self.count:
            self.end = self.entry(n)[0]
        super().truncate(n)
        self._hint = 0

    def reset(self) -> None:
        super().reset()
        self.end = 0


def read_entries(path: Path, entry_size: int, start: int, stop: int) -> bytes:
    """Entries [start, stop) of an entry file, through a descriptor of its own (so a
    reader in another thread does not depend on the cartridge staying open)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, (stop - start) * entry_size, start * entry_size)
    finally:
        os.close(fd)


def chunk_ids_from_file(path: Path, stop: int, batch: int = 4096) -> Iterator[bytes]:
    """Chunk ids of chunk-map entries [0, stop), read in batches (GC marking)."""
    for start in range(0, stop, batch):
        yield from chunk_ids_in(read_entries(path, CHUNK.size, start, min(stop, start + batch)))


def chunk_ids_in(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data) - CHUNK.size + 1, CHUNK.size):
        yield data[i + 16 : i + 48]

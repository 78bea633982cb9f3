"""Append-only segment files: many chunks per file, one flush per segment per commit.

    segments/<16 hex>.seg   records appended back to back, never rewritten in place

A record is the chunk's id (32 bytes) followed by its chunk file (chunkfile.py):
header, seal, payload. The id binds the bytes to the row that points at them,
so a row that pointed at the wrong place is caught on read, never served.

Why segments: one file per chunk costs a file flush and a directory journal
commit per chunk, whatever the batching (docs/PERFORMANCE.md, "Pool write
path"). Appending to a few open files costs one `fdatasync` per segment per
group commit, plus one directory fsync when a segment is new.

Writers: `append()` takes an open segment from a free list, writes one
record with `pwritev` at the segment's end and gives the segment back, so
concurrent writers append to different segments and never share a write.
A segment that reached `SEGMENT_BYTES` is retired: never appended to again.
`sync()` (the store's group commit) flushes each segment of the batch once,
and the segments directory when a segment of the batch is new, before any
row points at them.

Freeing (eviction, GC, a failed commit): the store deletes the row first,
then `release()` punches a hole over the record (fallocate PUNCH_HOLE, so the
disk space comes back at once); a retired segment with no rows left and no
record waiting for its commit is unlinked by `drop()`. Offsets are never
reused: a stale (segment, offset) reads a hole or nothing, not another chunk.

Nothing per chunk is kept in memory: where a chunk is lives in its row.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .chunkid import CHUNK_ID_LEN
from .errors import ChunkCorrupt

SEGMENT_BYTES = 64 << 20  # a segment takes no more appends once this long
_SUFFIX = ".seg"
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int


@dataclass(frozen=True, slots=True)
class Loc:
    """Where a record is: segment number, byte offset, record length."""

    seg: int
    off: int
    size: int


class _Open:
    """A segment taking appends; held by one writer at a time."""

    __slots__ = ("number", "fd", "end")

    def __init__(self, number: int, fd: int) -> None:
        self.number = number
        self.fd = fd
        self.end = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        # A safety net: a store dropped without close() does not leak its open segments.
        self.close()


def record_size(file_size: int) -> int:
    return CHUNK_ID_LEN + file_size


class SegmentFiles:
    def __init__(self, root: Path, *, fsync: bool, first_number: int = 1) -> None:
        self.dir = root / "segments"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._dir = str(self.dir)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._free: list[_Open] = []  # open segments no writer holds
        self._open: set[int] = set()  # numbers of segments not yet retired
        self._waiting: dict[int, int] = {}  # segment -> records appended, not yet settled
        self._new: set[int] = set()  # segments whose directory entry is not yet durable
        self._next = max(first_number, self._highest_on_disk() + 1)

    def path(self, seg: int) -> str:
        return f"{self._dir}/{seg:016x}{_SUFFIX}"

    # ---- writing ---------------------------------------------------------------

    def append(self, cid: bytes, parts: Sequence[bytes]) -> Loc:
        """Append the record (id + `parts`); returns where. Not durable until `sync()`.

        The record counts as waiting (its segment is never unlinked) until the
        store calls `settled()` for it, after its commit or its failure.
        """
        views = [memoryview(cid), *(memoryview(p) for p in parts if len(p))]
        size = sum(len(v) for v in views)
        seg = self._take()
        off = seg.end
        try:
            _pwrite_all(seg.fd, views, off)
        except BaseException:
            # The segment may hold a partial record past `end`: take no more
            # appends there (recovery trims what no row points at).
            self._retire(seg)
            raise
        seg.end = off + size
        with self._lock:
            self._waiting[seg.number] = self._waiting.get(seg.number, 0) + 1
        if seg.end >= SEGMENT_BYTES:
            self._retire(seg)
        else:
            with self._lock:
                self._free.append(seg)
        return Loc(seg.number, off, size)

    def sync(self, segs: set[int]) -> None:
        """Make every record appended so far to `segs` durable, and their names."""
        if not self.fsync:
            return
        for seg in sorted(segs):
            fd = os.open(self.path(seg), os.O_RDONLY)
            try:
                os.fdatasync(fd)  # the file's size too: an append needs it to be read back
            finally:
                os.close(fd)
        with self._lock:
            new = self._new & segs
        if new:
            fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            with self._lock:
                self._new -= new

    def settled(self, loc: Loc) -> None:
        """The record's commit is over (done or failed): its segment may go once empty."""
        with self._lock:
            left = self._waiting[loc.seg] - 1
            if left:
                self._waiting[loc.seg] = left
            else:
                del self._waiting[loc.seg]

    def _take(self) -> _Open:
        with self._lock:
            if self._free:
                return self._free.pop()
            number = self._next
            self._next += 1
            self._open.add(number)
            if self.fsync:
                self._new.add(number)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(self.path(number), flags, 0o644)
        except BaseException:
            with self._lock:
                self._open.discard(number)
                self._new.discard(number)
            raise
        return _Open(number, fd)

    def _retire(self, seg: _Open) -> None:
        seg.close()
        with self._lock:
            self._open.discard(seg.number)

    def close(self) -> None:
        """Retire every open segment (the store's writers are stopped)."""
        with self._lock:
            free, self._free = self._free, []
        for seg in free:
            self._retire(seg)

    # ---- reading ---------------------------------------------------------------

    def chunk_file_span(self, loc: Loc) -> tuple[str, int, int]:
        """(path, offset, length) of the chunk file inside the record at `loc`."""
        return self.path(loc.seg), loc.off + CHUNK_ID_LEN, loc.size - CHUNK_ID_LEN

    def read(self, cid: bytes, loc: Loc) -> bytes:
        """The chunk file bytes of `cid`'s record at `loc`.

        FileNotFoundError if the segment is gone; ChunkCorrupt if the bytes
        there are not `cid`'s record (a hole after the chunk was freed
        reads as zeros: the caller tells that from damage by its row).
        """
        fd = os.open(self.path(loc.seg), os.O_RDONLY | os.O_CLOEXEC)
        try:
            raw = os.pread(fd, loc.size, loc.off)
        finally:
            os.close(fd)
        if len(raw) != loc.size:
            raise ChunkCorrupt(cid, f"segment {loc.seg:x} ends inside the record at {loc.off}")
        if raw[:CHUNK_ID_LEN] != cid:
            raise ChunkCorrupt(cid, f"segment {loc.seg:x} holds another record at {loc.off}")
        return raw[CHUNK_ID_LEN:]

    # ---- freeing ---------------------------------------------------------------

    def release(self, loc: Loc) -> None:
        """Give the record's disk space back (its row is gone). Best effort.

        Where the file system cannot punch holes the bytes stay until the
        whole segment is dropped.
        """
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self.path(loc.seg), os.O_WRONLY | os.O_CLOEXEC)
            try:
                punch(fd, loc.off, loc.size)
            finally:
                os.close(fd)

    def droppable(self, seg: int) -> bool:
        """Retired and with no record waiting for its commit (rows are the caller's)."""
        with self._lock:
            return seg not in self._open and seg not in self._waiting

    def drop(self, seg: int) -> None:
        """Unlink a segment no row points into (the caller checked `droppable`)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(seg))

    # ---- recovery --------------------------------------------------------------

    def on_disk(self) -> Iterator[tuple[int, int]]:
        """(number, file length) of every segment file, in number order; strays removed."""
        found: list[tuple[int, int]] = []
        for entry in os.scandir(self.dir):
            number = _parse_name(entry.name)
            if number is None or not entry.is_file(follow_symlinks=False):
                if entry.is_dir(follow_symlinks=False):
                    continue  # not ours to remove
                os.unlink(entry.path)
                continue
            found.append((number, entry.stat(follow_symlinks=False).st_size))
        found.sort()
        yield from found

    def trim(self, seg: int, kept: list[tuple[int, int]], length: int) -> bool:
        """Free what no row points at: the gaps between `kept` (off, size, in
        order, not overlapping) and the tail. True if anything was freed."""
        freed = False
        fd = os.open(self.path(seg), os.O_RDWR | os.O_CLOEXEC)
        try:
            at = 0
            for off, size in kept:
                if off > at:
                    freed |= punch(fd, at, off - at, skip_holes=True)
                at = off + size
            if at < length:
                os.ftruncate(fd, at)
                freed = True
        finally:
            os.close(fd)
        return freed

    def _highest_on_disk(self) -> int:
        numbers = [n for n in map(_parse_name, os.listdir(self.dir)) if n is not None]
        return max(numbers, default=0)


def punch(fd: int, off: int, size: int, *, skip_holes: bool = False) -> bool:
    """Deallocate [off, off + size) of the file, keeping its length; False if
    there was nothing to do, or the file system cannot (the bytes then stay
    until the segment is dropped)."""
    if size <= 0:
        return False
    if skip_holes:
        try:
            if os.lseek(fd, off, os.SEEK_DATA) >= off + size:
                return False  # already a hole (freed earlier)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            return False  # no data at or after `off`
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, off, size) != 0:
        e = ctypes.get_errno()
        if e in (errno.EOPNOTSUPP, errno.ENOSYS):
            return False
        raise OSError(e, os.strerror(e))
    return True


def _pwrite_all(fd: int, views: list[memoryview], off: int) -> None:
    while views:
        n = os.pwritev(fd, views, off)
        off += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


def _parse_name(name: str) -> int | None:
    if len(name) != 16 + len(_SUFFIX) or not name.endswith(_SUFFIX):
        return None
    try:
        return int(name[:16], 16)
    except ValueError:
        return None

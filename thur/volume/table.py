"""The page table: page number -> chunk id, one fixed 64-byte entry per page.

    pages.table    entry i (page i) at byte 64 x i; no header

The file is *sparse*: a page never written is a hole, which reads as zeros,
and an all-zero entry means "unmapped" (reads as zeros, not stored). A 1 TiB
volume has 16 Mi pages of 64 KiB, so the table could reach 1 GiB, but only
the 4 KiB file blocks holding mapped entries take disk space or page cache,
and nothing of it is held in our own memory: a lookup is one `pread`.

Why a fixed-entry file and not sqlite: the lookup is an offset computation
(no B-tree, no per-row overhead, no WAL checkpoints on a write-heavy path);
one entry update is one `pwrite` of 64 bytes that never straddles a 512-byte
sector, so a crash leaves each entry either old or new (the CRC catches the
case where a disk breaks that promise); and the file replicates to the bucket
as content-named segments, byte for byte, like the cartridge chunk maps.

Entry, version 1 (little-endian):

| offset | size | field      | value                                        |
|--------|------|------------|----------------------------------------------|
| 0      | 32   | chunk id   | BLAKE3-256 of the page's plaintext           |
| 32     | 1    | flags      | 1 = mapped                                   |
| 33     | 3    | reserved   | 0                                            |
| 36     | 4    | plain_len  | bytes of the chunk (the page size)           |
| 40     | 20   | reserved   | 0                                            |
| 60     | 4    | crc        | CRC-32 (zlib) of bytes 0..59                 |
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from thur.volume.protocol import MediumCorrupt

ENTRY = struct.Struct("<32sB3xI20xI")
assert ENTRY.size == 64
ENTRY_SIZE = ENTRY.size
FLAG_MAPPED = 1
EMPTY = bytes(ENTRY_SIZE)
SCAN_ENTRIES = 65536  # entries read per step of a scan: 4 MiB


def encode_entry(cid: bytes | None, plain_len: int) -> bytes:
    if cid is None:
        return EMPTY
    body = ENTRY.pack(cid, FLAG_MAPPED, plain_len, 0)[:60]
    return body + struct.pack("<I", zlib.crc32(body))


def decode_entry(raw: bytes, page: int, page_size: int) -> bytes | None:
    """The chunk id of an entry, None when unmapped; MediumCorrupt when damaged."""
    if len(raw) < ENTRY_SIZE or raw == EMPTY:
        return None
    cid, flags, plain_len, crc = ENTRY.unpack(raw)
    if zlib.crc32(raw[:60]) != crc or flags != FLAG_MAPPED or plain_len != page_size:
        raise MediumCorrupt(f"page-table entry of page {page} is damaged")
    return cid


def ids_in(data: bytes, page_size: int, first_page: int = 0) -> Iterator[tuple[int, bytes]]:
    """(page, chunk id) of every mapped entry in a run of raw entries."""
    view = memoryview(data)
    for off in range(0, len(data) - ENTRY_SIZE + 1, ENTRY_SIZE):
        raw = bytes(view[off : off + ENTRY_SIZE])
        if raw != EMPTY:
            page = first_page + off // ENTRY_SIZE
            cid = decode_entry(raw, page, page_size)
            if cid is not None:
                yield page, cid


class PageTable:
    """The sparse entry file of one volume. Thread-safe (pread/pwrite plus a lock
    that keeps a segment read from seeing an entry half written)."""

    def __init__(self, path: Path, page_size: int, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.page_size = page_size
        self._fsync = fsync
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def get(self, page: int) -> bytes | None:
        raw = os.pread(self._fd, ENTRY_SIZE, page * ENTRY_SIZE)
        return decode_entry(raw, page, self.page_size)

    def set(self, page: int, cid: bytes | None) -> None:
        """Write one entry (not yet durable: `sync()` makes it so)."""
        entry = encode_entry(cid, self.page_size)
        with self._lock:
            if cid is None and page * ENTRY_SIZE >= self.size():
                return  # past the end of the file is already a hole
            os.pwrite(self._fd, entry, page * ENTRY_SIZE)

    def sync(self) -> None:
        if self._fsync:
            os.fdatasync(self._fd)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def allocated_bytes(self) -> int:
        return os.fstat(self._fd).st_blocks * 512

    def read_entries(self, first: int, count: int) -> bytes:
        """Raw entries [first, first + count), zero-filled past the end of the file."""
        with self._lock:
            data = os.pread(self._fd, count * ENTRY_SIZE, first * ENTRY_SIZE)
        return data + bytes(count * ENTRY_SIZE - len(data))

    def write_entries(self, first: int, data: bytes) -> None:
        """Raw entries at `first` (restore from the bucket)."""
        with self._lock:
            os.pwrite(self._fd, data, first * ENTRY_SIZE)

    def mapped(self, first: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(page, chunk id) of every mapped page in [first, stop), in page order.

        Holes are skipped with SEEK_DATA, so a scan of a mostly empty 1 TiB
        volume reads only the file blocks that hold entries.
        """
        end = self.size() // ENTRY_SIZE
        stop = end if stop is None else min(stop, end)
        page = first
        while page < stop:
            try:
                data_at = os.lseek(self._fd, page * ENTRY_SIZE, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    return  # only a hole is left
                raise
            page = max(page, data_at // ENTRY_SIZE)
            if page >= stop:
                return
            count = min(SCAN_ENTRIES, stop - page)
            yield from ids_in(self.read_entries(page, count), self.page_size, page)
            page += count

    def data_segments(self, per: int) -> Iterator[int]:
        """Numbers of the `per`-entry segments that hold any allocated file block."""
        seg_bytes = per * ENTRY_SIZE
        off, size = 0, self.size()
        while off < size:
            try:
                off = os.lseek(self._fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    return  # only a hole is left
                raise
            yield off // seg_bytes
            off = (off // seg_bytes + 1) * seg_bytes

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        # A safety net: a table dropped without close() (an error path) does not leak its fd.
        if getattr(self, "_fd", -1) >= 0:
            self.close()

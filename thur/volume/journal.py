"""The write journal of one volume: why an acknowledged write survives kill -9.

The page cache is RAM; without this file a write acknowledged after the last
fence would die with the daemon. Every command that changes content (a write,
a zero fill or unmap, a chunk-sharing copy) appends one record here with a
single write(2) *before* it is acknowledged. What write(2) returned is the
kernel's: kill -9 of the daemon cannot lose it, only a power loss can.

    journal.<epoch>     records since the last full fence, in command order

Write-ahead rule: the journal is fdatasync'd before any page-table entry is
written (write-back, unmap, copy). So after a power loss every entry on disk
reflects only records that are on disk too, and replaying the surviving
records in order over the table yields the state after the last of them:
each byte ends as the last record touching it left it, and bytes no record
touched are as the fence before the journal began left them.

A full fence (SYNCHRONIZE CACHE) writes every dirty page back and
fdatasyncs the table; the records are then redundant, and the journal starts
a new epoch: a new empty file, the directory fsync'd, every older file
unlinked. Between fences the volume keeps the journal bounded with a
*checkpoint* that never stalls a command: the current file is fdatasync'd
and retired, appends go on in a new epoch, the background writer writes back
every page dirty at that moment, and once they are all in the (fdatasync'd)
table the retired files are unlinked.

Opening a volume replays every epoch present, oldest first, and fences.
Replaying more history than needed is harmless: each byte ends as the last
record touching it left it, whatever the table held.

Record, version 1 (little-endian): a 40-byte header, then `payload_len` bytes.

| offset | size | field       | value                                           |
|--------|------|-------------|-------------------------------------------------|
| 0      | 4    | magic       | b"TJR1"                                         |
| 4      | 1    | kind        | 1 write, 2 zero, 3 set pages                    |
| 5      | 3    | reserved    | 0                                               |
| 8      | 8    | epoch       | the file's epoch (a stray block never matches)  |
| 16     | 8    | a           | write/zero: byte offset; set: first page        |
| 24     | 8    | b           | write/zero: byte length; set: page count        |
| 32     | 4    | payload_len | write: b; zero: 0; set: 32 x b (zeros = unmap)  |
| 36     | 4    | crc         | CRC-32 of header bytes 0..35, then the payload  |

Replay stops at the first record that is short or fails its CRC: the torn
tail of a power loss, never something a fence covered. A retired file was
fdatasync'd whole before the next epoch began, so a torn record can only be
in the newest file; one found earlier ends the replay there all the same
(history must stay contiguous).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import struct
import threading
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct("<4sB3xQQQII")
assert HEADER.size == 40
MAGIC = b"TJR1"
WRITE, ZERO, SET = 1, 2, 3
ID_SIZE = 32
NAME = re.compile(r"journal\.(\d+)")
READ_STEP = 1 << 20  # bytes read per step of a replay


@dataclass(frozen=True, slots=True)
class Record:
    kind: int
    a: int
    b: int
    payload: bytes

    def ids(self) -> list[bytes | None]:
        """The chunk ids of a SET record (None: unmap)."""
        out: list[bytes | None] = []
        for i in range(self.b):
            cid = self.payload[i * ID_SIZE : (i + 1) * ID_SIZE]
            out.append(None if cid == bytes(ID_SIZE) else cid)
        return out


class Journal:
    """The newest journal file of a volume directory, open for appending.

    The volume calls it under its own lock, except `sync()`, which the
    background writer may also call without it: `_sync_lock` keeps a sync
    and a rotation apart (appends need no lock against fdatasync).
    """

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.dir = Path(directory)
        self._fsync = fsync
        self._sync_lock = threading.Lock()
        epochs = sorted(int(m[1]) for p in self.dir.iterdir() if (m := NAME.fullmatch(p.name)))
        # Files of epochs before the current one, replayed first, unlinked when covered.
        self.retired: list[int] = epochs[:-1]
        if epochs:
            self.epoch = epochs[-1]
            self._fd = os.open(self._path(self.epoch), os.O_RDWR | os.O_APPEND)
        else:
            self.epoch = 0
            self._fd = self._create(1)
            self.epoch = 1
        self.end = os.fstat(self._fd).st_size
        self.synced = self.end  # what was there before we opened is on disk or lost
        self.retired_bytes = sum(self._path(e).stat().st_size for e in self.retired)

    @property
    def total(self) -> int:
        """Bytes a replay would read: the current file and the retired ones."""
        return self.end + self.retired_bytes

    def _path(self, epoch: int) -> Path:
        return self.dir / f"journal.{epoch}"

    def _create(self, epoch: int) -> int:
        fd = os.open(self._path(epoch), os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        if self._fsync:
            dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return fd

    # ---- appending -----------------------------------------------------------------

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._append(WRITE, offset, len(data), data)

    def zero(self, offset: int, length: int) -> None:
        self._append(ZERO, offset, length, b"")

    def set(self, first_page: int, ids: list[bytes | None]) -> None:
        payload = b"".join(bytes(ID_SIZE) if c is None else c for c in ids)
        self._append(SET, first_page, len(ids), payload)

    def _append(self, kind: int, a: int, b: int, payload: bytes | memoryview) -> None:
        head = HEADER.pack(MAGIC, kind, self.epoch, a, b, len(payload), 0)[:36]
        crc = zlib.crc32(payload, zlib.crc32(head))
        header = head + struct.pack("<I", crc)
        parts = [header, payload] if len(payload) else [header]
        want = HEADER.size + len(payload)
        try:
            done = os.writev(self._fd, parts)
        except OSError:
            self._cut_back()
            raise
        if done != want:  # a short append (disk full): take it back, report it
            self._cut_back()
            raise OSError(errno.ENOSPC, f"journal append of {want} bytes wrote {done}")
        self.end += want

    def _cut_back(self) -> None:
        """Drop a partial record so the next append does not land after garbage."""
        with contextlib.suppress(OSError):  # replay stops at the torn record anyway
            os.ftruncate(self._fd, self.end)

    # ---- durability ----------------------------------------------------------------

    def sync(self) -> None:
        """Make every record appended so far durable (the write-ahead rule)."""
        with self._sync_lock:
            end = self.end
            if end > self.synced and self._fd >= 0:
                if self._fsync:
                    os.fdatasync(self._fd)
                self.synced = end

    def retire(self) -> None:
        """Begin a checkpoint: make the current file durable whole and start a new
        epoch; the old file stays (replayed first) until `drop_retired()`."""
        self.sync()
        fd = self._create(self.epoch + 1)
        with self._sync_lock:
            old, self._fd = self._fd, fd
            os.close(old)
            self.retired.append(self.epoch)
            self.retired_bytes += self.end
            self.epoch += 1
            self.end = self.synced = 0

    def drop_retired(self) -> None:
        """End a checkpoint: every retired record is in the fdatasync'd table."""
        for epoch in self.retired:
            self._path(epoch).unlink(missing_ok=True)
        self.retired = []
        self.retired_bytes = 0

    def rotate(self) -> None:
        """Start a new, empty epoch and drop every older one; called after a full
        fence made all records redundant."""
        if self.end == 0 and not self.retired:
            return
        if self.end:
            fd = self._create(self.epoch + 1)
            with self._sync_lock:
                old, self._fd = self._fd, fd
                os.close(old)
                self.retired.append(self.epoch)
                self.epoch += 1
                self.end = self.synced = 0
        self.drop_retired()

    # ---- replay --------------------------------------------------------------------

    def records(self) -> Iterator[Record]:
        """Every record, retired epochs first, up to the first torn or foreign one."""
        for epoch in [*self.retired, self.epoch]:
            if epoch == self.epoch:
                whole = yield from _read_records(self._fd, epoch)
            else:
                try:
                    fd = os.open(self._path(epoch), os.O_RDONLY)
                except FileNotFoundError:
                    return  # a gap in the history: nothing after it can be replayed
                try:
                    whole = yield from _read_records(fd, epoch)
                finally:
                    os.close(fd)
            if not whole:
                return

    def close(self) -> None:
        with self._sync_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __del__(self) -> None:
        # A safety net: a journal dropped without close() (an error path) does not leak its fd.
        if getattr(self, "_fd", -1) >= 0:
            self.close()


def _read_records(fd: int, epoch: int) -> Generator[Record, None, bool]:
    """The records of one file; returns whether it ended cleanly (not torn)."""
    off, buf = 0, b""
    while True:
        while len(buf) < HEADER.size:
            more = os.pread(fd, READ_STEP, off + len(buf))
            if not more:
                return not buf
            buf += more
        magic, kind, rec_epoch, a, b, plen, crc = HEADER.unpack_from(buf)
        if magic != MAGIC or rec_epoch != epoch or kind not in (WRITE, ZERO, SET):
            return False
        need = HEADER.size + plen
        while len(buf) < need:
            more = os.pread(fd, max(READ_STEP, need - len(buf)), off + len(buf))
            if not more:
                return False
            buf += more
        payload = buf[HEADER.size : need]
        if zlib.crc32(payload, zlib.crc32(buf[:36])) != crc:
            return False
        yield Record(kind, a, b, payload)
        off += need
        buf = buf[need:]

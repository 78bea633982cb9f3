"""Where chunk files live under a pool's data_dir, and how they are written.

    chunks/ab/cd/<64 hex>   chunk file of the chunk whose id starts with abcd
    tmp/                    files being written (emptied on open)

Two levels of 256 shards keep directories small (4 M chunks → ~60 per leaf)
and are created lazily; a new shard's parents are fsync'd by the first
commit that makes a name in it durable (every chunk staged in the shard
until then carries them).

`stage()` makes a complete file appear under its final name (tmp + fsync +
rename) and returns the directories to fsync; the store's group commit
fsyncs them (`sync_dirs`, once per distinct directory of the batch) and only
then commits the chunks' rows (see store.py). Until that commit the file is
an unacknowledged orphan, which recovery sweeps.

Memory: which of the 65 536 leaf shards exist is one bit each (8 KiB in
all), not a set of paths; paths are built as strings when needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .chunkid import CHUNK_ID_LEN

_SHARDS = 1 << 16  # leaf shards: the first two bytes of the id
_DIR_SYNC_THREADS = 4  # directory fsyncs of one batch run concurrently (the journal merges them)


class ChunkFiles:
    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.chunks_dir = root / "chunks"
        self.tmp_dir = root / "tmp"
        self.fsync = fsync
        for d in (root, self.chunks_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._chunks = str(self.chunks_dir)
        self._tmp = str(self.tmp_dir)
        self._made = bytearray(_SHARDS // 8)  # bit per leaf shard known to exist
        self._unsynced: dict[str, frozenset[str]] = {}  # new shard -> parents to fsync
        self._lock = threading.Lock()
        self._syncers: ThreadPoolExecutor | None = None

    def path(self, cid: bytes) -> str:
        h = cid.hex()
        return f"{self._chunks}/{h[:2]}/{h[2:4]}/{h}"

    def read(self, cid: bytes) -> bytes:
        with open(self.path(cid), "rb", buffering=0) as f:
            return f.read()

    def unlink(self, cid: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(cid))

    def write(self, cid: bytes, raw: bytes) -> None:
        """tmp + fsync + rename + fsync of the directories that make the name durable."""
        self.sync_dirs(self.stage(cid, [raw]))

    def stage(self, cid: bytes, parts: Sequence[bytes]) -> frozenset[str]:
        """Write `parts` as the chunk's file: tmp + fsync + rename.

        Returns the directories whose fsync (`sync_dirs`) makes the new name
        durable: the shard directory, plus its parents while the shard's own
        creation is not yet known to be durable. `parts` are written with one
        writev, so the header and the payload are never concatenated.
        """
        final = self.path(cid)
        shard = final[: -2 * CHUNK_ID_LEN - 1]
        parents = self._ensure_dir(cid, shard)
        tmp = f"{self._tmp}/{cid.hex()}.{threading.get_ident()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, parts)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return parents | {shard}

    def sync_dirs(self, dirs: Iterable[str]) -> None:
        """fsync each distinct directory once (no-op with fsync off); several at a time."""
        if not self.fsync:
            return
        done = set(dirs)
        if len(done) > 1:
            with self._lock:
                if self._syncers is None:
                    self._syncers = ThreadPoolExecutor(
                        _DIR_SYNC_THREADS, thread_name_prefix="thur-pool-dirsync"
                    )
                syncers = self._syncers
            for _ in syncers.map(fsync_dir, done):  # re-raises the first error
                pass
        else:
            for d in done:
                fsync_dir(d)
        with self._lock:  # new shards whose entries are now durable
            for shard in [s for s, need in self._unsynced.items() if need <= done]:
                del self._unsynced[shard]

    def close(self) -> None:
        with self._lock:
            syncers, self._syncers = self._syncers, None
        if syncers is not None:
            syncers.shutdown(wait=True)

    def _ensure_dir(self, cid: bytes, d: str) -> frozenset[str]:
        """Make shard `d`; return the parents to fsync before a name in it is durable.

        A new shard's entry in its parents is made durable by the group
        commit of the first batch that uses it (one fsync for many chunks),
        not here; until then every chunk staged in it carries those parents.
        """
        n = (cid[0] << 8) | cid[1]
        byte, bit = n >> 3, 1 << (n & 7)
        with self._lock:
            if not self._made[byte] & bit:
                # Under the lock: a second writer must not see the directory
                # before the parents it still needs are recorded.
                if not os.path.isdir(d):
                    mid = os.path.dirname(d)
                    # The top level needs an fsync only when the middle one is new too.
                    new_mid = not os.path.isdir(mid)
                    os.makedirs(d, exist_ok=True)
                    if self.fsync:
                        need = {mid, os.path.dirname(mid)} if new_mid else {mid}
                        self._unsynced[d] = frozenset(need)
                self._made[byte] |= bit
            return self._unsynced.get(d, frozenset())

    def clear_tmp(self) -> int:
        """Remove leftovers of interrupted writes; returns how many."""
        n = 0
        for entry in os.scandir(self.tmp_dir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            n += 1
        return n

    def scan(self) -> Iterator[bytes | None]:
        """Ids of every chunk file, in id order; None for each stray file removed.

        Streams one leaf directory at a time, so memory does not grow with
        the number of chunks (recovery merges this with the rows, in order).
        """
        for top in sorted(os.scandir(self.chunks_dir), key=lambda e: e.name):
            if not top.is_dir(follow_symlinks=False):
                os.unlink(top.path)
                yield None
                continue
            for mid in sorted(os.scandir(top.path), key=lambda e: e.name):
                if not mid.is_dir(follow_symlinks=False):
                    os.unlink(mid.path)
                    yield None
                    continue
                found: list[bytes] = []
                for f in os.scandir(mid.path):
                    cid = _parse_name(f.name)
                    if cid is not None and f.path == self.path(cid):
                        found.append(cid)
                    elif f.is_dir(follow_symlinks=False):
                        shutil.rmtree(f.path)
                        yield None
                    else:
                        os.unlink(f.path)
                        yield None
                found.sort()
                yield from found


def _write_all(fd: int, parts: Sequence[bytes]) -> None:
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


def _parse_name(name: str) -> bytes | None:
    if len(name) != 2 * CHUNK_ID_LEN or name != name.lower():
        return None
    try:
        return bytes.fromhex(name)
    except ValueError:
        return None


def fsync_dir(d: str | Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

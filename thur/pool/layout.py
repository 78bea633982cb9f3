"""Where chunk files live under a pool's data_dir, and how they are written.

    chunks/ab/cd/<64 hex>   chunk file of the chunk whose id starts with abcd
    tmp/                    files being written (emptied on open)

Two levels of 256 shards keep directories small (4 M chunks → ~60 per leaf)
and are created lazily; a new shard's parents are fsync'd by the first writer
to make a name in it durable (any writer using the shard until then does it).

`stage()` makes a complete file appear under its final name (tmp + fsync +
rename) and returns the directories to fsync; the store fsyncs them and only
then commits the chunk's row (see store.py). Until that commit the file is
an unacknowledged orphan, which recovery sweeps.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from .chunkid import CHUNK_ID_LEN


class ChunkFiles:
    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.chunks_dir = root / "chunks"
        self.tmp_dir = root / "tmp"
        self.fsync = fsync
        for d in (root, self.chunks_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._made_dirs: set[Path] = set()
        self._unsynced: dict[Path, frozenset[Path]] = {}  # new shard -> parents to fsync
        self._lock = threading.Lock()

    def path(self, cid: bytes) -> Path:
        h = cid.hex()
        return self.chunks_dir / h[:2] / h[2:4] / h

    def read(self, cid: bytes) -> bytes:
        return self.path(cid).read_bytes()

    def unlink(self, cid: bytes) -> None:
        self.path(cid).unlink(missing_ok=True)

    def write(self, cid: bytes, raw: bytes) -> None:
        """tmp + fsync + rename + fsync of the directories that make the name durable."""
        self.sync_dirs(self.stage(cid, [raw]))

    def stage(self, cid: bytes, parts: Sequence[bytes]) -> frozenset[Path]:
        """Write `parts` as the chunk's file: tmp + fsync + rename.

        Returns the directories whose fsync (`sync_dirs`) makes the new name
        durable: the shard directory, plus its parents while the shard's own
        creation is not yet known to be durable. `parts` are written with one
        writev, so the header and the payload are never concatenated.
        """
        final = self.path(cid)
        parents = self._ensure_dir(final.parent)
        tmp = self.tmp_dir / f"{cid.hex()}.{threading.get_ident()}"
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
            tmp.unlink(missing_ok=True)
            raise
        return parents | {final.parent}

    def sync_dirs(self, dirs: Iterable[Path]) -> None:
        """fsync each distinct directory once (no-op with fsync off)."""
        if not self.fsync:
            return
        done = set(dirs)
        for d in done:
            fsync_dir(d)
        with self._lock:  # new shards whose entries are now durable
            for shard in [s for s, need in self._unsynced.items() if need <= done]:
                del self._unsynced[shard]

    def _ensure_dir(self, d: Path) -> frozenset[Path]:
        """Make shard `d`; return the parents to fsync before a name in it is durable.

        A new shard's entry in its parents is made durable by the group
        commit of the first batch that uses it (one fsync for many chunks),
        not here; until then every chunk staged in it carries those parents.
        """
        with self._lock:
            if d not in self._made_dirs:
                # Under the lock: a second writer must not see the directory
                # before the parents it still needs are recorded.
                if not d.is_dir():
                    # The top level needs an fsync only when the middle one is new too.
                    new_mid = not d.parent.is_dir()
                    d.mkdir(parents=True, exist_ok=True)
                    if self.fsync:
                        need = {d.parent, d.parent.parent} if new_mid else {d.parent}
                        self._unsynced[d] = frozenset(need)
                self._made_dirs.add(d)
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

    def scan(self) -> tuple[set[bytes], int]:
        """Ids of every chunk file, and how many stray files were removed."""
        found: set[bytes] = set()
        swept = 0
        for top in os.scandir(self.chunks_dir):
            if not top.is_dir(follow_symlinks=False):
                os.unlink(top.path)
                swept += 1
                continue
            for mid in os.scandir(top.path):
                if not mid.is_dir(follow_symlinks=False):
                    os.unlink(mid.path)
                    swept += 1
                    continue
                for f in os.scandir(mid.path):
                    cid = _parse_name(f.name)
                    if cid is not None and f.path == str(self.path(cid)):
                        found.add(cid)
                    elif f.is_dir(follow_symlinks=False):
                        shutil.rmtree(f.path)
                        swept += 1
                    else:
                        os.unlink(f.path)
                        swept += 1
        return found, swept


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
    try:
        raw = bytes.fromhex(name)
    except ValueError:
        return None
    return raw if len(raw) == CHUNK_ID_LEN else None


def fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Where chunk files live under a pool's data_dir, and how they are written.

    chunks/ab/cd/<64 hex>   chunk file of the chunk whose id starts with abcd
    tmp/                    files being written (emptied on open)

Two levels of 256 shards keep directories small (4 M chunks → ~60 per leaf)
and are created lazily, their parents fsync'd when they appear.
"""

from __future__ import annotations

import os
import shutil
import threading
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
        self._lock = threading.Lock()

    def path(self, cid: bytes) -> Path:
        h = cid.hex()
        return self.chunks_dir / h[:2] / h[2:4] / h

    def read(self, cid: bytes) -> bytes:
        return self.path(cid).read_bytes()

    def unlink(self, cid: bytes) -> None:
        self.path(cid).unlink(missing_ok=True)

    def write(self, cid: bytes, raw: bytes) -> None:
        """tmp + fsync + rename + fsync of the shard directory."""
        final = self.path(cid)
        self._ensure_dir(final.parent)
        tmp = self.tmp_dir / f"{cid.hex()}.{threading.get_ident()}"
        try:
            with open(tmp, "wb") as f:
                f.write(raw)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self.fsync:
            fsync_dir(final.parent)

    def _ensure_dir(self, d: Path) -> None:
        with self._lock:
            if d in self._made_dirs:
                return
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            if self.fsync:
                fsync_dir(d.parent)
                fsync_dir(d.parent.parent)
        with self._lock:
            self._made_dirs.add(d)

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

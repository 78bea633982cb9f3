"""Chunk files of pools of schema 1 (one file per chunk), and how they were written.

Since schema 2 new chunks go to segments (segments.py); a pool upgraded
from schema 1 keeps its chunk files, which are read, evicted and recovered
through this module (`write()` builds such a file, for tests).

    chunks/ab/cd/<64 hex>   chunk file of the chunk whose id starts with abcd
    tmp/                    files being written by schema 1 (emptied on open)

A file appeared under its final name complete (tmp + fsync + rename) and
its row was committed only after its directory entry was durable, so a
chunk file without a row is an unacknowledged write, which recovery sweeps.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from .chunkid import CHUNK_ID_LEN


class ChunkFiles:
    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.chunks_dir = root / "chunks"
        self.tmp_dir = root / "tmp"
        self.fsync = fsync
        for d in (root, self.chunks_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._chunks = str(self.chunks_dir)

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
        """A chunk file as schema 1 wrote it: tmp + fsync + rename + directory fsyncs."""
        final = self.path(cid)
        shard = os.path.dirname(final)
        os.makedirs(shard, exist_ok=True)
        tmp = f"{self.tmp_dir}/{cid.hex()}.{threading.get_ident()}"
        with open(tmp, "wb") as f:
            f.write(raw)
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
        if self.fsync:
            for d in (shard, os.path.dirname(shard), self._chunks):
                fsync_dir(d)

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

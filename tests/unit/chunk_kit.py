"""Reaching a chunk's bytes on disk, for the tests that damage them."""

from __future__ import annotations

import os

from thur.pool import LocalStore


def chunk_bytes(store: LocalStore, cid: bytes) -> bytes:
    """The chunk file bytes of `cid`, wherever the pool keeps them."""
    path, off, length = store.locate(cid)
    with open(path, "rb") as f:
        return os.pread(f.fileno(), length, off)


def overwrite(store: LocalStore, cid: bytes, raw: bytes, at: int = 0) -> None:
    """Write `raw` over the chunk's bytes at `at` (negative: into the record's id)."""
    path, off, length = store.locate(cid)
    assert at + len(raw) <= length, "a chunk's bytes are overwritten in place"
    with open(path, "r+b") as f:
        os.pwrite(f.fileno(), raw, off + at)


def as_chunk_file(store: LocalStore, cid: bytes, raw: bytes) -> None:
    """Make `raw` the chunk's bytes as a pool of schema 1 kept them: a file of its own."""
    store._files.write(cid, raw)
    with store._wlock:
        store._db.execute(
            "UPDATE chunks SET seg = NULL, off = NULL, size = ? WHERE id = ?", (len(raw), cid)
        )

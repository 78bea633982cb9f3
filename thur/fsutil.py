"""Crash-safe file writes shared by every component that persists state."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Copies of at least this many bytes go through `pwrite` (which releases the GIL);
# shorter ones are plain copies: one holds the GIL ~10 us per 256 KiB, less than
# giving the GIL up and taking it back from a busy thread costs (measured with two
# tape drives, docs/PERFORMANCE.md "Copies under 1 MiB hold the GIL").
UNLOCKED_COPY_MIN = 1024 * 1024


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, at: int) -> None:
    """`pwrite` all of `data` at offset `at`, however many calls it takes."""
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, at)
        if n <= 0:  # a regular file never does this; never loop on it
            raise OSError(f"pwrite wrote nothing at offset {at}")
        view, at = view[n:], at + n


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new file.

    tmp + fsync + rename + directory fsync: the order that survives kill -9 and
    power loss on ext4/xfs.
    """
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())

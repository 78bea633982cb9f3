"""The volume contract the SBC engine (handlers/scsi/sbc.py) is written against.

Errors carry no SCSI: the engine maps them to sense data in exactly one place.
Block addresses and counts are in logical blocks of `block_size` bytes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class VolumeError(Exception):
    """Base of every error a `Volume` raises on purpose."""


class OutOfRange(VolumeError):  # LBA range beyond the end
    """The LBA range reaches past the last block (nothing was done)."""


class WriteProtected(VolumeError):
    """The volume is write protected (nothing was written)."""


class MediumCorrupt(VolumeError):  # a chunk failed verification
    """Stored data failed verification (a chunk's hash did not match, or a
    page-table entry is damaged). Wrong bytes are never returned instead."""


class BackendFailure(VolumeError):  # local/back-end I/O failed; nothing acknowledged
    """Local disk or backend I/O failed; the command was not acknowledged."""


class Backpressure(VolumeError):  # cache full past the configured wait
    """The cache stayed full past the configured wait; the host should retry."""


class ShrinkRefused(VolumeError):
    """A shrink would drop allocated pages (or non-zero bytes) past the new end."""


@runtime_checkable
class Volume(Protocol):
    """A thin SBC-3 disk as the SBC engine sees it (`PoolVolume` is the production one).

    Calls on one volume may come from several threads (the ring thread, the
    admin socket); every method is safe to call concurrently.
    """

    @property
    def name(self) -> str: ...
    @property
    def block_size(self) -> int: ...  # 4096 (512 optional)
    @property
    def num_blocks(self) -> int: ...
    @property
    def serial(self) -> str: ...  # stable, for VPD 80h/83h
    @property
    def write_protected(self) -> bool: ...

    def read(self, lba: int, blocks: int) -> bytes:
        """Unmapped blocks read as zeros."""
        ...

    def write(self, lba: int, data: bytes | memoryview, *, fua: bool = False) -> None: ...

    def flush(self) -> None:
        """SYNCHRONIZE CACHE: durable (survives kill -9) when it returns."""
        ...

    def unmap(self, lba: int, blocks: int) -> None:
        """Deallocate; reads return zeros."""
        ...

    def write_zeroes(self, lba: int, blocks: int, *, unmap: bool) -> None: ...

    def is_mapped(self, lba: int, blocks: int) -> list[tuple[int, int, bool]]:
        """GET LBA STATUS: runs of (start_lba, count, mapped) covering the range,
        page-granular."""
        ...

    def compare_and_write(self, lba: int, verify: bytes, data: bytes) -> int | None:
        """Atomic per volume: None on success, else the byte offset of the first
        miscompare (nothing written)."""
        ...

    def copy_from(self, src: Volume, src_lba: int, dst_lba: int, blocks: int) -> None:
        """XCOPY fast path: page-aligned whole pages share chunks (no data copy) when
        both volumes use the same pool; unaligned edges fall back to read+write."""
        ...

    def resize(self, num_blocks: int) -> None:
        """Grow always; shrink refused (ShrinkRefused) when allocated pages lie
        beyond the new end."""
        ...

    @property
    def page_size(self) -> int: ...  # 64 KiB default; unmap granularity

"""`MemoryVolume`: a small in-RAM `thur.volume.protocol.Volume` for the SBC engine tests.

Pages are allocated on first write and dropped by unmap (whole pages) or zeroed (partial
pages), so GET LBA STATUS has something real to report. `is_mapped` answers page-aligned
runs, the first of which may start before the asked LBA, as the contract allows: the
engine has to clip them. Tests can inject the next error and count fences.
"""

from __future__ import annotations

import threading

from thur.volume.protocol import (
    OutOfRange,
    ShrinkRefused,
    Volume,
    VolumeError,
    WriteProtected,
)


class MemoryVolume:
    def __init__(
        self,
        name: str = "vol0",
        num_blocks: int = 1024,
        *,
        block_size: int = 4096,
        page_size: int = 64 * 1024,
        serial: str | None = None,
        write_protected: bool = False,
    ) -> None:
        if page_size % block_size:
            raise ValueError("page size must be a multiple of the block size")
        self._name = name
        self._num_blocks = num_blocks
        self._block_size = block_size
        self._page_size = page_size
        self._serial = serial or f"THURVOL-{name}"
        self.write_protected = write_protected
        self.pages: dict[int, bytearray] = {}
        self.lock = threading.RLock()
        self.flushes = 0
        self.fua_writes = 0
        self.writes = 0
        self.copies: list[tuple[str, int, int, int]] = []
        self.fail_next: VolumeError | None = None

    # ---- read-only properties ---------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    @property
    def serial(self) -> str:
        return self._serial

    @property
    def page_size(self) -> int:
        return self._page_size

    # ---- helpers ------------------------------------------------------------------------

    @property
    def blocks_per_page(self) -> int:
        return self._page_size // self._block_size

    def _injected(self) -> None:
        err, self.fail_next = self.fail_next, None
        if err is not None:
            raise err

    def _check(self, lba: int, blocks: int, *, write: bool = False) -> None:
        self._injected()
        if lba < 0 or blocks < 0 or lba + blocks > self._num_blocks:
            raise OutOfRange(f"{lba}+{blocks} > {self._num_blocks}")
        if write and self.write_protected:
            raise WriteProtected(self._name)

    def _put(self, offset: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            page, within = divmod(offset + pos, self._page_size)
            n = min(self._page_size - within, len(data) - pos)
            buf = self.pages.setdefault(page, bytearray(self._page_size))
            buf[within : within + n] = data[pos : pos + n]
            pos += n

    def _get(self, offset: int, length: int) -> bytes:
        out = bytearray()
        pos = 0
        while pos < length:
            page, within = divmod(offset + pos, self._page_size)
            n = min(self._page_size - within, length - pos)
            buf = self.pages.get(page)
            out += buf[within : within + n] if buf is not None else bytes(n)
            pos += n
        return bytes(out)

    # ---- the Volume contract -------------------------------------------------------------

    def read(self, lba: int, blocks: int) -> bytes:
        with self.lock:
            self._check(lba, blocks)
            return self._get(lba * self._block_size, blocks * self._block_size)

    def write(self, lba: int, data: bytes | memoryview, *, fua: bool = False) -> None:
        data = bytes(data)  # never keep the caller's buffer (it is the ring's)
        if len(data) % self._block_size:
            raise ValueError("partial block write")
        with self.lock:
            self._check(lba, len(data) // self._block_size, write=True)
            self._put(lba * self._block_size, data)
            self.writes += 1
            self.fua_writes += bool(fua)

    def flush(self) -> None:
        with self.lock:
            self._injected()
            self.flushes += 1

    def unmap(self, lba: int, blocks: int) -> None:
        with self.lock:
            self._check(lba, blocks, write=True)
            bpp = self.blocks_per_page
            end = lba + blocks
            pos = lba
            while pos < end:
                page = pos // bpp
                start, stop = page * bpp, (page + 1) * bpp
                if pos == start and stop <= end:
                    self.pages.pop(page, None)
                elif page in self.pages:
                    n = min(stop, end) - pos
                    self._put(pos * self._block_size, bytes(n * self._block_size))
                pos = min(stop, end)

    def write_zeroes(self, lba: int, blocks: int, *, unmap: bool) -> None:
        with self.lock:
            if unmap:
                self.unmap(lba, blocks)
                return
            self._check(lba, blocks, write=True)
            self._put(lba * self._block_size, bytes(blocks * self._block_size))

    def is_mapped(self, lba: int, blocks: int) -> list[tuple[int, int, bool]]:
        with self.lock:
            self._check(lba, blocks)
            bpp = self.blocks_per_page
            runs: list[tuple[int, int, bool]] = []
            page = lba // bpp
            while page * bpp < lba + blocks:
                start = page * bpp
                count = min(bpp, self._num_blocks - start)
                mapped = page in self.pages
                if runs and runs[-1][2] == mapped:
                    first, n, _ = runs[-1]
                    runs[-1] = (first, n + count, mapped)
                else:
                    runs.append((start, count, mapped))
                page += 1
            return runs

    def compare_and_write(self, lba: int, verify: bytes, data: bytes) -> int | None:
        with self.lock:
            blocks = len(data) // self._block_size
            self._check(lba, blocks, write=True)
            current = self._get(lba * self._block_size, len(verify))
            for i, (a, b) in enumerate(zip(current, verify, strict=True)):
                if a != b:
                    return i
            self._put(lba * self._block_size, bytes(data))
            return None

    def copy_from(self, src: Volume, src_lba: int, dst_lba: int, blocks: int) -> None:
        with self.lock:
            self._check(dst_lba, blocks, write=True)
            data = src.read(src_lba, blocks)
            self._put(dst_lba * self._block_size, data)
            self.copies.append((src.name, src_lba, dst_lba, blocks))

    def resize(self, num_blocks: int) -> None:
        with self.lock:
            if num_blocks < self._num_blocks:
                bpp = self.blocks_per_page
                if any(p * bpp + bpp > num_blocks for p in self.pages):
                    raise ShrinkRefused(self._name)
            self._num_blocks = num_blocks


def _is_volume(v: MemoryVolume) -> Volume:  # a static check that the fake fits the protocol
    return v

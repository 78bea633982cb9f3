"""The data area of `FakeKernel`, handed out the way target_core_user.c does it.

The kernel allocates a command's buffer one block at a time, always the lowest free
block (``find_first_zero_bit``), and merges blocks that happen to be adjacent into one
iovec. Commands therefore get several iovecs only when the area is fragmented;
`DataArea.alloc` can fragment on purpose so tests see multi-iovec commands on demand.
Blocks that will receive data-in are not cleared by the kernel; here they are poisoned
so a stale byte that would reach the initiator is easy to spot.
"""

from __future__ import annotations

from thur.fsutil import UNLOCKED_COPY_MIN, pwrite_all

POISON = 0xA5


class HandlerBug(AssertionError):
    """The handler broke the ring protocol (the real kernel would mark the ring broken)."""


class RingFull(Exception):
    """No room in the command ring or data area: reap completions first (qfull)."""


def _one_run(blocks: list[int]) -> bool:
    """`blocks` are consecutive ascending block numbers (compared in C, not a loop)."""
    return bool(blocks) and blocks == list(range(blocks[0], blocks[0] + len(blocks)))


class DataArea:
    """Blocks of `block_size` bytes from map offset `data_off` on."""

    def __init__(
        self, mv: memoryview, fd: int, data_off: int, blocks: int, block_size: int, poison: bool
    ) -> None:
        self._mv = mv
        self._fd = fd  # the file behind `mv`: large data-out is written through it
        self._data_off = data_off
        self._block_size = block_size
        self._used = bytearray(blocks)
        self._poison = bytes([POISON]) * block_size if poison else b""

    def alloc(self, length: int, runs: int) -> list[int]:
        """Lowest-free blocks for `length` bytes, in `runs` discontiguous runs."""
        count = -(-length // self._block_size)
        if not count:
            return []
        if count > len(self._used):
            raise ValueError(f"{length} bytes is too big for the data area")
        runs = max(1, min(runs, count))
        if runs == 1:
            first = self._used.find(0)
            end = first + count
            if first >= 0 and end <= len(self._used) and self._used.find(1, first, end) < 0:
                # The lowest free block and the ones after it are free: the
                # block-at-a-time loop below would take exactly these.
                self._used[first:end] = b"\x01" * count
                return list(range(first, end))
        # Fragment by holding a guard block between runs while allocating.
        guards: list[int] = []
        blocks: list[int] = []
        try:
            for r in range(runs):
                for _ in range(count // runs + (1 if r < count % runs else 0)):
                    blocks.append(self._take())
                if r < runs - 1:
                    guards.append(self._take())
        except RingFull:
            self.free(blocks)
            raise
        finally:
            self.free(guards)
        return blocks

    def _take(self) -> int:
        dbi = self._used.find(0)
        if dbi < 0:
            raise RingFull("data area full")
        self._used[dbi] = 1
        return dbi

    def free(self, blocks: list[int]) -> None:
        if _one_run(blocks):  # alloc's fast path
            self._used[blocks[0] : blocks[-1] + 1] = bytes(len(blocks))
            return
        for dbi in blocks:
            self._used[dbi] = 0

    def iovecs(self, blocks: list[int], length: int) -> list[tuple[int, int]]:
        """(map offset, length) runs over `blocks`, adjacent blocks merged."""
        if _one_run(blocks):
            return [(self._data_off + blocks[0] * self._block_size, length)]
        iovs: list[list[int]] = []
        remaining = length
        for dbi in blocks:
            base = self._data_off + dbi * self._block_size
            n = min(self._block_size, remaining)
            remaining -= n
            if iovs and iovs[-1][0] + iovs[-1][1] == base:
                iovs[-1][1] += n
            else:
                iovs.append([base, n])
        return [(b, n) for b, n in iovs]

    def write(self, data: bytes, iovs: list[tuple[int, int]]) -> None:
        """Scatter data-out into its iovecs (scatter_data_area)."""
        src = memoryview(data).cast("B")
        # Large data-out by `pwrite`, which runs without the GIL as the kernel's copy
        # does; small by a plain copy, cheaper than handing the GIL over (fsutil.py).
        unlocked = len(src) >= UNLOCKED_COPY_MIN
        pos = 0
        for base, ln in iovs:
            piece = src[pos : pos + ln]
            if unlocked:
                pwrite_all(self._fd, piece, base)
            else:
                self._mv[base : base + len(piece)] = piece
            pos += ln

    def poison(self, blocks: list[int]) -> None:
        if not self._poison:
            return
        for dbi in blocks:
            start = self._data_off + dbi * self._block_size
            self._mv[start : start + self._block_size] = self._poison

"""FakeKernel's data area hands out blocks the way target_core_user.c does."""

from __future__ import annotations

import mmap
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.tcmu.fake_data import DataArea, RingFull

BLOCKS, BS = 32, 16


@contextmanager
def _area(blocks: int = BLOCKS, bs: int = BS) -> Iterator[DataArea]:
    fd = os.memfd_create("test-data-area")
    try:  # closed: hundreds of hypothesis examples must not run the process out of fds
        os.ftruncate(fd, blocks * bs)
        yield DataArea(memoryview(mmap.mmap(fd, blocks * bs)), fd, 0, blocks, bs, poison=False)
    finally:
        os.close(fd)


def _lowest_free(used: list[bool], count: int) -> list[int] | None:
    """The kernel's rule, one block at a time: always the lowest free block."""
    free = [i for i, u in enumerate(used) if not u]
    return free[:count] if len(free) >= count else None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 12 * BS)), max_size=40))
def test_blocks_are_always_the_lowest_free_ones(ops: list[tuple[bool, int]]) -> None:
    with _area() as area:
        _check_lowest_free(area, ops)


def _check_lowest_free(area: DataArea, ops: list[tuple[bool, int]]) -> None:
    used: list[bool] = [False] * BLOCKS
    held: list[tuple[list[int], int]] = []
    for alloc, length in ops:
        if alloc or not held:
            want = _lowest_free(used, -(-length // BS))
            try:
                got = area.alloc(length, 1)
            except RingFull:
                assert want is None
                continue
            assert got == want
            for b in got:
                used[b] = True
            held.append((got, length))
            iovs = area.iovecs(got, length)
            assert sum(n for _, n in iovs) == length
            assert [b // BS for base, n in iovs for b in range(base, base + n, BS)] == got
        else:
            blocks, _ = held.pop(length % len(held))
            area.free(blocks)
            for b in blocks:
                used[b] = False


@pytest.mark.parametrize("bs", [BS, 512 * 1024])  # through the map; by pwrite (>= 1 MiB)
def test_data_out_lands_in_the_iovecs(bs: int) -> None:
    with _area(BLOCKS, bs) as area:
        _check_data_out(area, bs)


def _check_data_out(area: DataArea, bs: int) -> None:
    blocks = area.alloc(3 * bs, 3)  # three discontiguous runs
    iovs = area.iovecs(blocks, 3 * bs)
    assert len(iovs) == 3
    data = random.Random(bs).randbytes(3 * bs)
    area.write(data, iovs)
    assert b"".join(bytes(area._mv[b : b + n]) for b, n in iovs) == data
    assert os.pread(area._fd, BLOCKS * bs, 0) == bytes(area._mv)  # one memory

"""The ring against the fake kernel: round trips, data movement, ordering, wrap
(faults, malformed entries, TMR and geometry: test_tcmu_ring_faults.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from handlers.scsi.engine import CHECK_CONDITION, GOOD, Response
from handlers.tcmu.fake_kernel import POISON, Completion, FakeKernel, RingFull
from handlers.tcmu.ring import Ring
from handlers.tcmu.uapi import (
    TCMU_MAILBOX_FLAG_CAP_TMR,
    TCMU_UFLAG_READ_LEN,
    ffi,
)
from tests.unit.ring_kit import TUR, StubEngine, read6, serve, small_kernel, write6
from thur.fsutil import UNLOCKED_COPY_MIN


@pytest.fixture
def fake() -> Iterator[FakeKernel]:
    yield from small_kernel()


def test_single_command_round_trip(fake: FakeKernel) -> None:
    engine = StubEngine()
    cmd_id = fake.submit(TUR)
    ring, done = serve(fake, engine)
    assert engine.calls == [(TUR, None)]
    assert done == {cmd_id: Completion(cmd_id, GOOD, b"", b"", None, 0)}
    assert ring.stats.commands == 1
    assert fake.inflight == 0


def test_data_out_is_gathered_across_three_iovecs(fake: FakeKernel) -> None:
    payload = os.urandom(1500)
    cmd_id = fake.submit(write6(1500), data_out=payload, iov_split=3)
    entry = fake.entry(cmd_id)
    assert entry.req.iov_cnt == 3
    bases = [int(ffi.cast("uintptr_t", entry.req.iov[i].iov_base)) for i in range(3)]
    assert all(b - a > 512 for a, b in zip(bases, bases[1:], strict=False))  # discontiguous
    engine = StubEngine()
    _, done = serve(fake, engine)
    assert engine.calls == [(write6(1500), payload)]
    assert done[cmd_id].status == GOOD


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("size", [200 * 1024 + 123, UNLOCKED_COPY_MIN + 123])
def test_data_out_is_gathered_into_a_private_copy(split: int, size: int) -> None:
    # From UNLOCKED_COPY_MIN on, by ctypes.memmove into a new bytes object.
    kernel = FakeKernel(data_blocks=2 * UNLOCKED_COPY_MIN // 4096, block_size=4096)
    try:
        payload = os.urandom(size)
        cmd_id = kernel.submit(write6(len(payload)), data_out=payload, iov_split=split)
        kept: list[memoryview] = []

        def keep(cdb: bytes, data_out: memoryview | None) -> Response:
            assert data_out is not None
            kept.append(data_out)
            return Response()

        _, done = serve(kernel, StubEngine(keep))
        assert done[cmd_id].status == GOOD
        # The blocks go back to the kernel and are reused: the engine's copy must not move.
        kernel.submit(write6(len(payload)), data_out=bytes(len(payload)), iov_split=split)
        assert bytes(kept[0]) == payload
        assert isinstance(kept[0].obj, bytes)
    finally:
        kernel.close()


def test_data_in_is_scattered_across_three_iovecs(fake: FakeKernel) -> None:
    engine = StubEngine()
    engine.read_data = os.urandom(1536)
    cmd_id = fake.submit(read6(1536), data_in_len=1536, iov_split=3)
    _, done = serve(fake, engine)
    assert done[cmd_id].data_in == engine.read_data
    assert done[cmd_id].uflags == 0  # full transfer: no READ_LEN needed


def test_short_data_in_sets_read_len(fake: FakeKernel) -> None:
    engine = StubEngine()
    engine.read_data = b"short record"
    cmd_id = fake.submit(read6(4096), data_in_len=4096, iov_split=2)
    _, done = serve(fake, engine)
    c = done[cmd_id]
    assert c.uflags & TCMU_UFLAG_READ_LEN
    assert c.read_len == len(engine.read_data)
    assert c.data_in == engine.read_data  # not 4 KiB of poison


def test_short_read_with_check_condition_keeps_its_data(fake: FakeKernel) -> None:
    """Tape ILI: data and sense both reach the initiator thanks to READ_LEN."""
    ili = bytes([0xF0, 0, 0x20, 0, 0, 0x0F, 0x00, 10] + [0] * 10)
    engine = StubEngine(lambda cdb, _: Response(CHECK_CONDITION, ili, b"x" * 1000))
    cmd_id = fake.submit(read6(5000), data_in_len=5000)
    _, done = serve(fake, engine)
    assert done[cmd_id].status == CHECK_CONDITION
    assert done[cmd_id].sense == ili
    assert done[cmd_id].data_in == b"x" * 1000


def test_data_in_longer_than_the_buffer_is_truncated(fake: FakeKernel) -> None:
    engine = StubEngine()
    engine.read_data = b"A" * 2000
    first = fake.submit(read6(700), data_in_len=700)
    second = fake.submit(read6(512), data_in_len=512)
    engine_two = iter([b"A" * 2000, b""])
    engine.handler = lambda cdb, _: Response(data=next(engine_two))
    _, done = serve(fake, engine)
    assert done[first].data_in == b"A" * 700
    # The neighbour's buffer (next blocks) was not overrun: it is still all poison,
    # which the zero-fill then replaced with zeros because nothing was returned.
    assert done[second].data_in == bytes(512)


def test_without_read_len_capability_the_unfilled_rest_is_zeroed() -> None:
    fake = FakeKernel(
        cmdr_size=4096 - 128, data_blocks=16, block_size=512, flags=TCMU_MAILBOX_FLAG_CAP_TMR
    )
    engine = StubEngine()
    engine.read_data = b"hello"
    cmd_id = fake.submit(read6(1024), data_in_len=1024, iov_split=2)
    _, done = serve(fake, engine)
    assert done[cmd_id].data_in == b"hello" + bytes(1019)
    assert POISON not in done[cmd_id].data_in
    fake.close()


def test_empty_good_data_in_does_not_leak_stale_bytes(fake: FakeKernel) -> None:
    cmd_id = fake.submit(bytes([0x12, 0, 0, 0, 255, 0]), data_in_len=255)
    _, done = serve(fake, StubEngine())
    assert done[cmd_id].data_in == bytes(255)


def test_write_never_scribbles_data_in_over_its_buffer(fake: FakeKernel) -> None:
    engine = StubEngine(lambda cdb, _: Response(data=b"Z" * 600))
    payload = os.urandom(600)
    fake.submit(write6(600), data_out=payload)
    ring = Ring(fake.map, engine)
    ring.process()
    iov_base = fake.data_off  # first block of the data area holds the write's data
    assert bytes(fake.map[iov_base : iov_base + 600]) == payload
    ring.close()


def test_bidirectional_command(fake: FakeKernel) -> None:
    engine = StubEngine(lambda cdb, data_out: Response(data=bytes(data_out or b"")[::-1]))
    payload = os.urandom(300)
    cmd_id = fake.submit(bytes([0x53] + [0] * 9), data_out=payload, data_in_len=300)
    _, done = serve(fake, engine)
    assert engine.calls[0][1] == payload
    assert done[cmd_id].data_in == payload[::-1]


def test_many_commands_in_one_pass_complete_in_order(fake: FakeKernel) -> None:
    engine = StubEngine()
    ids = []
    with pytest.raises(RingFull):
        while True:
            ids.append(fake.submit(bytes([0x00, 0, 0, 0, len(ids) % 256, 0])))
    ring = Ring(fake.map, engine)
    assert ring.process() == len(ids)
    assert [c[0][4] for c in engine.calls] == [i % 256 for i in range(len(ids))]
    assert list(fake.completions()) == ids
    assert ring.tail == ring.head
    ring.close()


def test_wrap_around_with_pad_many_times(fake: FakeKernel) -> None:
    engine = StubEngine(lambda cdb, data_out: Response(data=bytes(data_out or b"")))
    ring = Ring(fake.map, engine)
    sizes = [6, 10, 12, 16, 32]  # CDB lengths vary the entry size, so PADs vary too
    submitted = 0
    for i in range(2000):
        cdb = (
            bytes([0x7F] + [0] * 6 + [24])
            if sizes[i % 5] == 32
            else bytes([{6: 0x00, 10: 0x25, 12: 0xA0, 16: 0x88}[sizes[i % 5]]]) + bytes(15)
        )
        try:
            fake.submit(cdb, data_in_len=(i % 7) * 100, iov_split=1 + i % 3)
            submitted += 1
        except RingFull:
            ring.process()
            fake.completions()
    ring.process()
    fake.completions()
    assert ring.stats.pads > 20
    assert ring.stats.commands == submitted
    assert fake.inflight == 0
    ring.close()

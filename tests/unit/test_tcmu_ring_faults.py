"""The ring against the fake kernel when things go wrong: engine faults, malformed
entries, TMR aborts, odd geometry, random traffic, and the fake kernel's own checks."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.scsi.engine import CHECK_CONDITION, GOOD, Response
from handlers.tcmu.command import SAM_STAT_TASK_ABORTED, cdb_length
from handlers.tcmu.fake_kernel import FakeKernel, HandlerBug, RingFull
from handlers.tcmu.ring import Ring, RingError
from handlers.tcmu.uapi import (
    TcmuOp,
    TcmuTmr,
    ffi,
    make_len_op,
)
from tests.unit.ring_kit import (
    HW_ERROR_44,
    TUR,
    StubEngine,
    read6,
    sense_key,
    serve,
    small_kernel,
    write6,
)


@pytest.fixture
def fake() -> Iterator[FakeKernel]:
    yield from small_kernel()


def test_engine_exception_becomes_hardware_error_and_loop_continues(
    fake: FakeKernel, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(cdb: bytes, _: memoryview | None) -> Response:
        if cdb[0] == 0x08:
            raise KeyError("bug in engine")
        return Response()

    bad = fake.submit(read6(512), data_in_len=512)
    good = fake.submit(TUR)
    with caplog.at_level(logging.ERROR):
        ring, done = serve(fake, StubEngine(explode))
    assert done[bad].status == CHECK_CONDITION
    assert sense_key(done[bad].sense) == HW_ERROR_44
    assert len(done[bad].sense) == 18
    assert done[bad].data_in == b""
    assert done[good].status == GOOD
    assert ring.stats.engine_errors == 1
    assert "bug in engine" in caplog.text


@pytest.mark.parametrize(
    "bad_response",
    [
        lambda: Response(data=12345),  # type: ignore[arg-type]  # not bytes-like
        lambda: None,
        lambda: Response(status="x"),  # type: ignore[arg-type]
    ],
)
def test_nonsense_responses_become_hardware_error(
    fake: FakeKernel, bad_response: Callable[[], Response]
) -> None:
    cmd_id = fake.submit(read6(10), data_in_len=10)
    _, done = serve(fake, StubEngine(lambda cdb, _: bad_response()))
    assert sense_key(done[cmd_id].sense) == HW_ERROR_44


def test_wants_data_out_raising_is_contained(fake: FakeKernel) -> None:
    engine = StubEngine()
    engine.wants_data_out = lambda cdb: 1 / 0  # type: ignore[method-assign]
    cmd_id = fake.submit(TUR)
    _, done = serve(fake, engine)
    assert sense_key(done[cmd_id].sense) == HW_ERROR_44
    assert engine.calls == []


def test_check_condition_without_sense_gets_a_real_sense(fake: FakeKernel) -> None:
    cmd_id = fake.submit(TUR)
    _, done = serve(fake, StubEngine(lambda cdb, _: Response(status=CHECK_CONDITION)))
    assert sense_key(done[cmd_id].sense) == HW_ERROR_44


def test_oversized_sense_is_cut_to_96_bytes(fake: FakeKernel) -> None:
    sense = bytes([0x72, 0x05, 0x24, 0x00, 0, 0, 0, 200]) + bytes(200)
    cmd_id = fake.submit(TUR)
    ring = Ring(fake.map, StubEngine(lambda cdb, _: Response(CHECK_CONDITION, sense)))
    ring.process()
    assert fake.completions()[cmd_id].sense == sense[:96]
    ring.close()


def test_cdb_lengths_follow_the_kernel_for_every_opcode(fake: FakeKernel) -> None:
    engine = StubEngine()
    ring = Ring(fake.map, engine)
    for opcode in range(256):
        cdb = bytes([opcode]) + os.urandom(31)
        fake.submit(cdb)
        ring.process()
        want = cdb_length(opcode, cdb[7])
        assert engine.calls[-1][0] == cdb[:want].ljust(want, b"\0"), hex(opcode)
        fake.completions()
    ring.close()


def test_truncated_cdb_reaches_the_engine_truncated(fake: FakeKernel) -> None:
    cmd_id = fake.submit(bytes([0x7F] + [0] * 6 + [8]) + bytes(8))  # 16-byte varlen CDB
    off = fake.entry_offset(cmd_id)
    entry = fake.entry(cmd_id)
    length = entry.hdr.len_op & ~7
    entry.req.cdb_off = off + length - 4  # CDB says 16 bytes; only 4 left in the entry
    engine = StubEngine()
    _, done = serve(fake, engine)
    assert len(engine.calls[0][0]) == 4
    assert done[cmd_id].status == GOOD


def corrupt(fake: FakeKernel, cmd_id: int, **fields: int) -> None:
    entry = fake.entry(cmd_id)
    for name, value in fields.items():
        if name == "iov0_base":
            entry.req.iov[0].iov_base = ffi.cast("void *", value)
        else:
            setattr(entry.req, name, value)


@pytest.mark.parametrize(
    "fields",
    [
        {"iov0_base": 200},  # into the command ring, not the data area
        {"iov0_base": 1 << 40},  # beyond the map
        {"iov_cnt": 100000},  # iovecs cannot fit in the entry
        {"cdb_off": 1 << 33},  # CDB outside the entry
        {"cdb_off": 0},
    ],
)
def test_bad_command_entry_is_answered_and_the_loop_continues(
    fake: FakeKernel, fields: dict[str, int]
) -> None:
    bad = fake.submit(read6(100), data_in_len=100)
    corrupt(fake, bad, **fields)
    good = fake.submit(TUR)
    engine = StubEngine()
    ring, done = serve(fake, engine)
    assert sense_key(done[bad].sense) == HW_ERROR_44
    assert done[good].status == GOOD
    assert len(engine.calls) == 1
    assert ring.stats.bad_entries == 1


@pytest.mark.parametrize(
    "bad_length",
    [
        lambda own: 0,
        lambda own: 48,  # a CMD entry too short to hold the response
        lambda own: 1 << 20,  # past the end of the ring
        lambda own: own + 1600,  # past cmd_head
    ],
)
def test_malformed_entry_length_stops_the_pass_safely(
    fake: FakeKernel, bad_length: Callable[[int], int], caplog: pytest.LogCaptureFixture
) -> None:
    first = fake.submit(TUR)
    bad = fake.submit(TUR)
    fake.submit(TUR)
    own = fake.entry(bad).hdr.len_op & ~7
    fake.entry(bad).hdr.len_op = make_len_op(bad_length(own), TcmuOp.CMD)
    engine = StubEngine()
    ring = Ring(fake.map, engine)
    with caplog.at_level(logging.ERROR):
        assert ring.process() == 1
        ring.process()  # the same problem is not logged twice
    assert list(fake.completions()) == [first]
    assert ring.tail == fake.entry_offset(bad) - fake.cmdr_off  # parked on the bad entry
    assert ring.stats.malformed == 2
    assert caplog.text.count("malformed ring") == 1
    # The kernel's remedy is action/reset_ring; the ring then works again.
    fake.reset_ring()
    again = fake.submit(TUR)
    ring.process()
    assert list(fake.completions()) == [again]
    ring.close()


def test_tmr_abort_is_honoured(fake: FakeKernel) -> None:
    seen: list[tuple[int, tuple[int, ...]]] = []
    first = fake.submit(write6(10), data_out=b"1" * 10)
    second = fake.submit(write6(10), data_out=b"2" * 10)
    third = fake.submit(write6(10), data_out=b"3" * 10)
    fake.submit_tmr(TcmuTmr.ABORT_TASK, [second, 999])
    engine = StubEngine()
    ring, done = serve(fake, engine, on_tmr=lambda kind, ids: seen.append((kind, ids)))
    assert [data for _, data in engine.calls] == [b"1" * 10, b"3" * 10]  # no side effect
    assert done[second].status == SAM_STAT_TASK_ABORTED
    assert done[first].status == done[third].status == GOOD
    assert seen == [(TcmuTmr.ABORT_TASK, (second, 999))]
    assert ring.stats.aborted == 1 and ring.stats.tmrs == 1


def test_tmr_arriving_while_a_command_runs_stops_the_queued_ones(fake: FakeKernel) -> None:
    engine = StubEngine()
    running = fake.submit(write6(1), data_out=b"a")
    queued = fake.submit(write6(1), data_out=b"b")
    after = fake.submit(write6(1), data_out=b"c")

    def execute(cdb: bytes, data_out: memoryview | None) -> Response:
        if data_out is not None and bytes(data_out) == b"a":
            # The initiator gives up while the first command runs (a long tape op).
            fake.submit_tmr(TcmuTmr.ABORT_TASK_SET, [running, queued])
        return Response()

    engine.handler = execute
    _, done = serve(fake, engine)
    assert [data for _, data in engine.calls] == [b"a", b"c"]
    assert done[running].status == GOOD  # too late to stop; the kernel ignores it
    assert done[queued].status == SAM_STAT_TASK_ABORTED
    assert done[after].status == GOOD


def test_tmr_does_not_abort_a_command_queued_after_it(fake: FakeKernel) -> None:
    fake.submit_tmr(TcmuTmr.LUN_RESET, [1])
    later = fake.submit(TUR)  # gets id 1: listed ids only name commands queued before
    assert later == 1
    engine = StubEngine()
    _, done = serve(fake, engine)
    assert done[later].status == GOOD
    assert len(engine.calls) == 1


def test_tmr_listener_failure_is_contained(fake: FakeKernel) -> None:
    fake.submit_tmr(TcmuTmr.LUN_RESET, [])
    cmd_id = fake.submit(TUR)

    def broken(kind: int, ids: tuple[int, ...]) -> None:
        raise RuntimeError("listener bug")

    _, done = serve(fake, StubEngine(), on_tmr=broken)
    assert done[cmd_id].status == GOOD


@pytest.mark.parametrize("start", [0, 8, 2048, 4096 - 128 - 8])
def test_resume_from_a_non_zero_tail(start: int) -> None:
    fake = FakeKernel(cmdr_size=4096 - 128, data_blocks=16, block_size=512, start_offset=start)
    ids = [fake.submit(read6(40), data_in_len=40) for _ in range(6)]
    engine = StubEngine(lambda cdb, _: Response(data=b"r" * 40))
    first = Ring(fake.map, engine)
    calls = 0

    def stop_after_three() -> bool:
        nonlocal calls
        calls += 1
        return len(engine.calls) >= 3

    first.process(stop_after_three)
    first.close()
    assert list(fake.completions()) == ids[:3]
    # A new handler (restart) attaches to the same map and continues at cmd_tail.
    second = Ring(fake.map, engine)
    second.process()
    done = fake.completions()
    assert list(done) == ids[3:]
    assert len(engine.calls) == 6
    assert all(c.data_in == b"r" * 40 for c in done.values())
    second.close()
    fake.close()


def test_ring_works_over_a_bytearray() -> None:
    fake = FakeKernel(cmdr_size=4096 - 128, data_blocks=4, block_size=512)
    fake.submit(read6(5), data_in_len=5)
    copy = bytearray(fake.map)
    engine = StubEngine()
    engine.read_data = b"12345"
    ring = Ring(copy, engine)
    ring.process()
    assert ring.tail == ring.head != 0
    ring.close()
    fake.close()


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(RingError):
        Ring(bytearray(64), StubEngine())
    with pytest.raises(RingError):
        Ring(bytes(4096), StubEngine())
    buf = bytearray(4096)
    mb = ffi.cast("struct tcmu_mailbox *", ffi.from_buffer(buf))
    mb.version, mb.cmdr_off, mb.cmdr_size = 2, 128, 8192  # ring bigger than the map
    with pytest.raises(RingError):
        Ring(buf, StubEngine())


def test_closed_ring_refuses_to_process(fake: FakeKernel) -> None:
    ring = Ring(fake.map, StubEngine())
    ring.close()
    ring.close()
    with pytest.raises(RingError):
        ring.process()


OPS = st.lists(
    st.tuples(
        st.sampled_from(["none", "read", "write", "tmr", "serve"]),
        st.integers(0, 3000),
        st.integers(1, 4),
        st.integers(0, 255),
    ),
    min_size=10,
    max_size=200,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, start=st.integers(0, 4096 // 8 - 17).map(lambda x: x * 8))
def test_random_traffic_never_corrupts_the_ring(
    ops: list[tuple[str, int, int, int]], start: int
) -> None:
    """Every command completes exactly once, with the right data, wherever the ring wraps."""
    fake = FakeKernel(cmdr_size=4096 - 128, data_blocks=24, block_size=512, start_offset=start)
    expected: dict[int, tuple[str, bytes]] = {}
    completed: list[int] = []
    executed: list[bytes] = []
    order: list[bytes] = []

    def handler(cdb: bytes, data_out: memoryview | None) -> Response:
        executed.append(bytes(data_out) if data_out is not None else cdb)
        if cdb[0] == 0x08:
            n = int.from_bytes(cdb[2:5], "big")
            return Response(data=bytes([cdb[5]]) * (n // 2 + 1))
        return Response()

    engine = StubEngine(handler)
    ring = Ring(fake.map, engine)

    def reap() -> None:
        ring.process()
        for cmd_id, completion in fake.completions().items():
            kind, want = expected.pop(cmd_id)
            assert completion.status == GOOD, kind
            if kind == "read":
                assert completion.data_in == want
            completed.append(cmd_id)

    for kind, size, split, tag in ops:
        if kind == "serve":
            reap()
            continue
        for _ in range(2):
            try:
                if kind == "tmr":  # ids no command ever gets: nothing is aborted
                    fake.submit_tmr(TcmuTmr.UNKNOWN, [60000 + tag] * (size % 5))
                elif kind == "read":
                    cdb = bytes([0x08, 0, size >> 16, size >> 8 & 0xFF, size & 0xFF, tag])
                    cmd_id = fake.submit(cdb, data_in_len=size, iov_split=split)
                    expected[cmd_id] = ("read", bytes([tag]) * min(size, size // 2 + 1))
                    order.append(cdb)
                elif kind == "write":
                    payload = bytes([tag]) * size
                    cmd_id = fake.submit(write6(size), data_out=payload, iov_split=split)
                    expected[cmd_id] = ("write", payload)
                    order.append(payload)
                else:
                    cmd_id = fake.submit(bytes([0x00, 0, 0, 0, tag, 0]))
                    expected[cmd_id] = ("none", b"")
                    order.append(bytes([0x00, 0, 0, 0, tag, 0]))
                break
            except RingFull:
                reap()
    reap()
    assert not expected and fake.inflight == 0
    assert executed == order  # each command ran exactly once, in order, with its data
    assert len(completed) == len(order) == ring.stats.commands
    assert ring.tail == ring.head == fake.head
    ring.close()
    fake.close()


# -- the fake kernel polices the handler ------------------------------------------------


def test_fake_kernel_detects_tail_past_head(fake: FakeKernel) -> None:
    fake.submit(TUR)
    tail_off = ffi.offsetof("struct tcmu_mailbox", "cmd_tail")
    fake.map[tail_off : tail_off + 4] = (fake.head + 8).to_bytes(4, "little")
    with pytest.raises(HandlerBug, match="past cmd_head"):
        fake.completions()


def test_fake_kernel_detects_tail_inside_an_entry(fake: FakeKernel) -> None:
    fake.submit(TUR)
    fake.submit(TUR)
    tail_off = ffi.offsetof("struct tcmu_mailbox", "cmd_tail")
    fake.map[tail_off : tail_off + 4] = (fake.entry_offset(2) - fake.cmdr_off + 8).to_bytes(
        4, "little"
    )
    with pytest.raises(HandlerBug, match="entry boundary"):
        fake.completions()


def test_fake_kernel_detects_an_unknown_cmd_id(fake: FakeKernel) -> None:
    fake.submit(TUR)
    ring = Ring(fake.map, StubEngine())
    ring.process()
    ring.close()
    fake.map[fake.cmdr_off + 4 : fake.cmdr_off + 6] = (4242).to_bytes(2, "little")
    with pytest.raises(HandlerBug, match="not found"):
        fake.completions()


def test_fake_kernel_lays_entries_like_the_kernel(fake: FakeKernel) -> None:
    cmd_id = fake.submit(bytes([0x88]) + bytes(15), data_in_len=1500, iov_split=3)
    entry = fake.entry(cmd_id)
    off = fake.entry_offset(cmd_id)
    # max(offsetof(iov[3]), sizeof(entry)) = 112, then the 16-byte CDB.
    assert entry.hdr.len_op == make_len_op(112 + 16, TcmuOp.CMD)
    assert entry.req.cdb_off == off + 112
    assert entry.req.iov_cnt == 3 and entry.req.iov_bidi_cnt == 0
    lens = [entry.req.iov[i].iov_len for i in range(3)]
    assert lens == [512, 512, 476]
    bases = [int(ffi.cast("uintptr_t", entry.req.iov[i].iov_base)) for i in range(3)]
    assert all((b - fake.data_off) % 512 == 0 for b in bases)
    # Five iovecs push the CDB out: 48 + 5 * 16 = 128.
    five = fake.submit(bytes([0x88]) + bytes(15), data_in_len=5 * 512, iov_split=5)
    assert fake.entry(five).req.cdb_off == fake.entry_offset(five) + 128

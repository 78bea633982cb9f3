"""The thin disk under fuzz, directly and through the fake kernel's ring.

Random and mutated CDBs with data-out that often fits them exactly (so writes, UNMAP,
COMPARE AND WRITE and EXTENDED COPY get past the length checks and reach the volume):
execute() never raises, every reply is GOOD or well-formed CHECK CONDITION, never the
HARDWARE ERROR a bug would produce. Out-of-range LBAs keep answering 05/21/00 end to end.
"""

from __future__ import annotations

import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.scsi import ThinDisk, parse_sense, thin_disk_identity
from handlers.tcmu.fake_kernel import POISON, Completion, FakeKernel
from handlers.tcmu.ring import Ring
from tests.unit.test_scsi_fuzz import check_reply, mutate
from tests.unit.volume_memory import MemoryVolume

GOOD, CHECK_CONDITION = 0x00, 0x02
BS, BLOCKS = 512, 64  # small blocks keep generated data-out small


def _xcopy_seed() -> bytes:
    naa = thin_disk_identity("FUZZ-A").naa()
    cscd = bytes([0xE4, 0, 0, 0, 0x01, 0x03, 0, 16]) + naa + bytes(5) + BS.to_bytes(3, "big")
    seg = struct.pack(">BBHHHxxHQQ", 0x02, 0, 0x18, 0, 0, 4, 0, 8)
    return struct.pack(">BBH4xII", 1, 0, 32, 28, 0) + cscd + seg


XCOPY_PARAMS = _xcopy_seed()
UNMAP_PARAMS = struct.pack(">HH4xQI4x", 22, 16, 3, 5)

SBC_SEEDS = [
    bytes([0x08, 0, 0, 1, 2, 0]),  # READ(6)
    bytes([0x0A, 0, 0, 3, 1, 0]),  # WRITE(6)
    bytes([0x1B, 0, 0, 0, 1, 0]),  # START STOP UNIT
    bytes([0x25] + [0] * 9),  # READ CAPACITY(10)
    struct.pack(">BBIBHB", 0x28, 0x18, 4, 0, 2, 0),  # READ(10) DPO FUA
    struct.pack(">BBIBHB", 0x2A, 0x08, 60, 0, 4, 0),  # WRITE(10) past the end
    struct.pack(">BBIBHB", 0x2E, 0x02, 1, 0, 1, 0),  # WRITE AND VERIFY(10)
    struct.pack(">BBIBHB", 0x2F, 0x02, 1, 0, 1, 0),  # VERIFY(10) BYTCHK
    struct.pack(">BBIBHB", 0x34, 0, 1, 0, 1, 0),  # PRE-FETCH(10)
    struct.pack(">BBIBHB", 0x35, 0x02, 0, 0, 0, 0),  # SYNCHRONIZE CACHE(10)
    struct.pack(">BBIBHB", 0x41, 0x08, 2, 0, 6, 0),  # WRITE SAME(10) UNMAP
    struct.pack(">BB4xBHB", 0x42, 0, 0, len(UNMAP_PARAMS), 0),  # UNMAP
    struct.pack(">BB8xIBB", 0x83, 0, len(XCOPY_PARAMS), 0, 0),  # EXTENDED COPY
    struct.pack(">BBB7xIBB", 0x84, 0x03, 0, 64, 0, 0),  # RECEIVE COPY RESULTS op params
    struct.pack(">BBB7xIBB", 0x84, 0x00, 1, 12, 0, 0),  # RECEIVE COPY RESULTS status
    struct.pack(">BBQIBB", 0x88, 0, 7, 3, 0, 0),  # READ(16)
    struct.pack(">BBQ3xBBB", 0x89, 0, 5, 1, 0, 0),  # COMPARE AND WRITE
    struct.pack(">BBQIBB", 0x8A, 0, 9, 2, 0, 0),  # WRITE(16)
    struct.pack(">BBQIBB", 0x8F, 0x06, 0, 2, 0, 0),  # VERIFY(16) BYTCHK 11
    struct.pack(">BBQIBB", 0x91, 0, 0, 0, 0, 0),  # SYNCHRONIZE CACHE(16)
    struct.pack(">BBQIBB", 0x93, 0x01, 0, 0, 0, 0),  # WRITE SAME(16) NDOB to the end
    struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0),  # READ CAPACITY(16)
    struct.pack(">BBQIBB", 0x9E, 0x12, 3, 64, 0, 0),  # GET LBA STATUS
    struct.pack(">BBIIBB", 0xA8, 0, 1, 1, 0, 0),  # READ(12)
    struct.pack(">BBIIBB", 0xAA, 0, 1, 1, 0, 0),  # WRITE(12)
    bytes([0x12, 1, 0xB0, 0, 64, 0]),  # INQUIRY B0h
    bytes([0x12, 1, 0x8F, 1, 0, 0]),  # INQUIRY 8Fh
    bytes([0x1A, 0, 0x3F, 0, 255, 0]),  # MODE SENSE all pages
    bytes([0x15, 0x10, 0, 0, 24, 0]),  # MODE SELECT
    bytes([0xA3, 0x0C, 0x01, 0x89, 0, 0, 0, 0, 1, 0, 0, 0]),  # RSOC one command
]


def wanted_data_out(cdb: bytes) -> bytes | None:
    """A data-out that fits `cdb` exactly (at most 64 blocks), when it takes one."""
    op, size = cdb[0] if cdb else -1, len(cdb)
    blocks: int | None = None
    if op == 0x0A and size >= 6:
        blocks = cdb[4] or 256
    elif op in (0x2A, 0x2E, 0x2F) and size >= 10:
        blocks = struct.unpack_from(">H", cdb, 7)[0]
    elif op in (0xAA, 0xAE, 0xAF) and size >= 12:
        blocks = struct.unpack_from(">I", cdb, 6)[0]
    elif op in (0x8A, 0x8E, 0x8F) and size >= 16:
        blocks = struct.unpack_from(">I", cdb, 10)[0]
    elif op in (0x41, 0x93):
        return bytes([0, 1] * (BS // 2)) if size > 2 and cdb[2] & 1 else bytes(BS)
    elif op == 0x89 and size >= 16:
        blocks = 2 * cdb[13]
    elif op == 0x42:
        return UNMAP_PARAMS
    elif op == 0x83:
        return XCOPY_PARAMS
    if blocks is None or blocks > 64:
        return None
    return bytes([0xA5]) * (blocks * BS)


@st.composite
def mutated_sbc(draw: st.DrawFn) -> bytes:
    return mutate(draw, SBC_SEEDS)


@st.composite
def sbc_command(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    cdb = draw(st.one_of(st.binary(max_size=20), st.sampled_from(SBC_SEEDS), mutated_sbc()))
    fits = wanted_data_out(cdb) if cdb else None
    if fits is not None and draw(st.booleans()):
        return cdb, fits
    return cdb, draw(st.one_of(st.none(), st.binary(max_size=2 * BS)))


def fuzz_disk() -> ThinDisk:
    a = MemoryVolume("a", BLOCKS, block_size=BS, page_size=4096, serial="FUZZ-A")
    b = MemoryVolume("b", BLOCKS, block_size=BS, page_size=4096, serial="FUZZ-B")
    a.write(0, bytes(range(256)) * 8)
    other = {thin_disk_identity("FUZZ-B").naa(): b}
    return ThinDisk(a, resolver=other.get)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(sbc_command(), min_size=1, max_size=8))
def test_random_commands_never_break_the_disk(commands: list[tuple[bytes, bytes | None]]
                                              ) -> None:
    d = fuzz_disk()
    for cdb, data in commands:
        check_reply(d, cdb, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(sbc_command(), min_size=1, max_size=4), st.booleans())
def test_descriptor_sense_and_write_protection_stay_well_formed(
    commands: list[tuple[bytes, bytes | None]], protected: bool,
) -> None:
    d = fuzz_disk()
    d._control.current[2] |= 0x04  # D_SENSE
    d.volume.write_protected = protected  # type: ignore[misc]
    for cdb, data in commands:
        check_reply(d, cdb, data)


# ---- through the ring -----------------------------------------------------------------------

def _run(engine: ThinDisk, cdb: bytes, data_in_len: int = 0,
         data_out: bytes | None = None) -> Completion:
    fake = FakeKernel()
    ring = Ring(fake.map, engine)  # type: ignore[arg-type]
    cmd_id = fake.submit(cdb, data_out=data_out, data_in_len=data_in_len)
    ring.process()
    return fake.completions()[cmd_id]


def _sense(done: Completion) -> tuple[int, int, int]:
    code = parse_sense(done.sense).code
    return int(code.key), code.asc, code.ascq


def test_write_read_and_out_of_range_through_the_ring() -> None:
    vol = MemoryVolume("ring", 256)
    d = ThinDisk(vol)
    assert _run(d, bytes(6)).status == CHECK_CONDITION  # POWER ON
    data = bytes(range(256)) * 32  # two 4 KiB blocks
    done = _run(d, struct.pack(">BBQIBB", 0x8A, 0, 10, 2, 0, 0), data_out=data)
    assert done.status == GOOD
    done = _run(d, struct.pack(">BBQIBB", 0x88, 0, 10, 2, 0, 0), data_in_len=8192)
    assert done.status == GOOD and done.data_in == data
    for cdb in (struct.pack(">BBQIBB", 0x88, 0, 255, 2, 0, 0),
                struct.pack(">BBIBHB", 0x28, 0, 2**32 - 1, 0, 1, 0),
                struct.pack(">BBQIBB", 0x9E, 0x12, 256, 32, 0, 0)):
        done = _run(d, cdb, data_in_len=8192)
        assert done.status == CHECK_CONDITION and _sense(done) == (5, 0x21, 0)
        assert POISON not in done.data_in
    done = _run(d, struct.pack(">BBQIBB", 0x8A, 0, 255, 2, 0, 0), data_out=data)
    assert _sense(done) == (5, 0x21, 0)


def test_short_buffers_get_read_len_and_no_stale_bytes() -> None:
    d = ThinDisk(MemoryVolume("ring", 256))
    _run(d, bytes(6))
    done = _run(d, struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0), data_in_len=4096)
    assert done.status == GOOD and len(done.data_in) == 32 and done.read_len == 32
    done = _run(d, struct.pack(">BBQIBB", 0x9E, 0x12, 0, 4096, 0, 0), data_in_len=4096)
    assert done.status == GOOD and done.read_len == 24 and POISON not in done.data_in


def test_malformed_cdbs_through_the_ring_never_stop_the_loop() -> None:
    d = fuzz_disk()
    _run(d, bytes(6))
    rng = random.Random(11)
    fake = FakeKernel()
    ring = Ring(fake.map, d)  # type: ignore[arg-type]
    ids, done = [], {}
    for _ in range(400):
        seed = rng.choice(SBC_SEEDS)
        cdb = bytearray(seed)
        for _ in range(rng.randint(0, 3)):
            cdb[rng.randrange(len(cdb))] = rng.getrandbits(8)
        cdb = bytes(cdb) if rng.random() < 0.8 else bytes(
            rng.getrandbits(8) for _ in range(rng.choice([6, 10, 12, 16])))
        if d.wants_data_out(cdb):
            out = wanted_data_out(cdb)
            if out is None or rng.random() < 0.3:
                out = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 8, BS])))
            ids.append(fake.submit(cdb, data_out=out))
        else:
            ids.append(fake.submit(cdb, data_in_len=rng.choice([0, 1, 36, 4096])))
        ring.process()
        done.update(fake.completions())  # reaping frees the data area
    assert set(done) >= set(ids)
    for cmd_id in ids:
        c = done[cmd_id]
        assert c.status in (GOOD, CHECK_CONDITION)
        if c.status == CHECK_CONDITION:
            assert _sense(c)[:2] != (0x04, 0x44)
    inquiry = _run(d, bytes([0x12, 0, 0, 0, 36, 0]), data_in_len=36)
    assert inquiry.status == GOOD and inquiry.data_in[0] == 0x00

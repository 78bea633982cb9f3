"""Fuzz: random and mutated CDBs (with random data-out) never make an engine raise.

Every reply is GOOD (no sense) or CHECK CONDITION with well-formed sense, and never the
HARDWARE ERROR that the catch-all in execute() produces for a bug.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.scsi import (
    CHECK_CONDITION,
    GOOD,
    InMemoryChanger,
    MediumChanger,
    ScsiDevice,
    SenseKey,
    TapeDrive,
    changer_identity,
    parse_sense,
    tape_drive_identity,
)
from tests.unit.test_scsi_ssc import FakeMedium

SEEDS = [
    bytes([0x00, 0, 0, 0, 0, 0]),
    bytes([0x03, 0, 0, 0, 252, 0]),
    bytes([0x12, 1, 0x83, 0, 255, 0]),
    bytes([0x15, 0x10, 0, 0, 28, 0]),
    bytes([0x1A, 0x08, 0x3F, 0xFF, 255, 0]),
    bytes([0x1B, 0, 0, 0, 1, 0]),
    bytes([0x1E, 0, 0, 0, 1, 0]),
    bytes([0x34, 6, 0, 0, 0, 0, 0, 0, 32, 0]),
    bytes([0x37, 1, 4, 0, 0, 0, 0, 2, 0, 0]),
    bytes([0x44, 1, 0, 0, 0, 0, 0, 1, 0, 0]),
    bytes([0x4C, 2, 0x40, 0, 0, 0, 0, 0, 16, 0]),
    bytes([0x4D, 0, 0x6E, 0, 0, 0, 0, 2, 0, 0]),
    bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, 40, 0]),
    bytes([0x5A, 0x18, 0x3F, 0xFF, 0, 0, 0, 4, 0, 0]),
    bytes([0xA3, 0x0C, 0x82, 0xA3, 0, 0x0C, 0, 0, 1, 0, 0, 0]),
    bytes([0xA5, 0, 0, 0, 4, 0, 1, 0, 0, 0, 0, 0]),
    bytes([0xA6, 0, 0, 0, 4, 0, 4, 1, 4, 2, 0, 0]),
    bytes([0xB8, 0x10, 0, 0, 0xFF, 0xFF, 0x03, 0, 4, 0, 0, 0]),
    bytes([0x2B, 0, 0, 0, 4, 0, 0, 0, 0, 0]),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    cdb = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        cdb[draw(st.integers(0, len(cdb) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(cdb) + 6))
    return bytes(cdb[:cut]) if cut <= len(cdb) else bytes(cdb) + bytes(cut - len(cdb))


cdbs = st.one_of(st.binary(min_size=0, max_size=32), mutated())
data_outs = st.one_of(st.none(), st.binary(max_size=300))


def devices() -> list[ScsiDevice]:
    drives = [TapeDrive(tape_drive_identity(f"TD{i:08d}")) for i in range(2)]
    model = InMemoryChanger(slots=4, mail_slots=1, drives=drives,
                            media=lambda bc: FakeMedium(barcode=bc))
    model.insert(0x400, "ABC001L8")
    model.insert(0x401, "ABC002L8")
    model.move(0x401, 0x101)  # drive 1 is loaded, drive 0 is empty
    return [drives[0], drives[1], MediumChanger(changer_identity("TL00000001"), model)]


def check_reply(dev: ScsiDevice, cdb: bytes, data: bytes | None) -> None:
    dev.wants_data_out(cdb)
    resp = dev.execute(cdb, None if data is None else memoryview(data))
    assert resp.status in (GOOD, CHECK_CONDITION)
    assert isinstance(resp.data, bytes | bytearray | memoryview)
    if resp.status == GOOD:
        assert resp.sense == b""
        return
    raw = bytes(resp.sense)
    if dev.descriptor_sense:
        assert raw[0] == 0x72 and len(raw) == 8 + raw[7]
    else:
        assert raw[0] in (0x70, 0xF0) and len(raw) == 18 and raw[7] == 10
    sense = parse_sense(raw)
    assert sense.code.key != SenseKey.HARDWARE_ERROR, (cdb.hex(), sense)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(cdbs, data_outs), min_size=1, max_size=6))
def test_random_command_sequences_never_raise(commands: list[tuple[bytes, bytes | None]]) -> None:
    for dev in devices():
        for cdb, data in commands:
            check_reply(dev, cdb, data)

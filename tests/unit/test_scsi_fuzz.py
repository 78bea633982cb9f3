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
from thur.tape import MemoryCartridge

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

# The tape drive's own commands, in the shapes st, tar and LTFS send them.
SSC_SEEDS = [
    bytes([0x01, 0, 0, 0, 0, 0]),  # REWIND
    bytes([0x04, 0, 0x01, 0, 0, 0]),  # FORMAT MEDIUM partition
    bytes([0x08, 0, 0, 0x01, 0, 0]),  # READ 256 bytes
    bytes([0x08, 0x03, 0, 0, 2, 0]),  # READ fixed + SILI
    bytes([0x0A, 0, 0, 0, 0x40, 0]),  # WRITE 64 bytes
    bytes([0x0A, 0x01, 0, 0, 2, 0]),  # WRITE 2 fixed blocks
    bytes([0x0B, 0, 0, 0x80, 0, 0]),  # SET CAPACITY
    bytes([0x10, 0, 0, 0, 1, 0]),  # WRITE FILEMARKS
    bytes([0x11, 0x01, 0xFF, 0xFF, 0xFF, 0]),  # SPACE back 1 filemark
    bytes([0x11, 0x03, 0, 0, 0, 0]),  # SPACE to EOD
    bytes([0x13, 0, 0, 0, 0x40, 0]),  # VERIFY
    bytes([0x15, 0x10, 0, 0, 12, 0]),  # MODE SELECT (setblk)
    bytes([0x15, 0x10, 0, 0, 24, 0]),  # MODE SELECT page 11h
    bytes([0x19, 0x01, 0, 0, 0, 0]),  # ERASE long
    bytes([0x1A, 0, 0x11, 0, 255, 0]),  # MODE SENSE page 11h
    bytes([0x1B, 0, 0, 0, 0, 0]),  # UNLOAD
    bytes([0x2B, 0x06, 0, 0, 0, 0, 2, 0, 1, 0]),  # LOCATE(10) CP BT
    bytes([0x34, 0x08, 0, 0, 0, 0, 0, 0, 32, 0]),  # READ POSITION extended
    bytes([0x44, 0x01, 0, 0, 0, 0, 0, 0, 60, 0]),  # REPORT DENSITY SUPPORT media
    bytes([0x4D, 0, 0x57, 0, 0, 0, 0, 1, 0, 0]),  # LOG SENSE 17h
    bytes([0x80, 0, 0, 0, *bytes(8), 0, 0, 1, 0]),  # WRITE FILEMARKS(16)
    bytes([0x82, 0, 0x01, 0, *bytes(8), 0, 0, 0, 0]),  # ALLOW OVERWRITE
    bytes([0x8C, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x06, 0, 0, 1, 0, 0, 0]),  # READ ATTRIBUTE
    bytes([0x8D, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0]),  # WRITE ATTRIBUTE
    bytes([0x91, 0, 0, 0, *(2**64 - 3).to_bytes(8, "big"), 0, 0, 0, 0]),  # SPACE(16) -3
    bytes([0x92, 0x1A, 0, 1, *(5).to_bytes(8, "big"), 0, 0, 0, 0]),  # LOCATE(16)
    bytes([0xA2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]),  # SECURITY PROTOCOL IN
    bytes([0xB5, 0x20, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]),  # SECURITY PROTOCOL OUT
]


def mutate(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    cdb = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        cdb[draw(st.integers(0, len(cdb) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(cdb) + 6))
    return bytes(cdb[:cut]) if cut <= len(cdb) else bytes(cdb) + bytes(cut - len(cdb))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(draw, SEEDS)


@st.composite
def mutated_ssc(draw: st.DrawFn) -> bytes:
    return mutate(draw, SSC_SEEDS + SEEDS)


cdbs = st.one_of(st.binary(min_size=0, max_size=32), mutated())
data_outs = st.one_of(st.none(), st.binary(max_size=300))


@st.composite
def ssc_command(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """A mutated tape CDB and a data-out that often fits it exactly (so WRITE, MODE SELECT
    and WRITE ATTRIBUTE get past the length checks and reach the cartridge)."""
    cdb = draw(st.one_of(mutated_ssc(), st.binary(min_size=0, max_size=20)))
    wanted = 0
    if len(cdb) >= 6 and cdb[0] in (0x0A, 0x15):
        wanted = int.from_bytes(cdb[2:5], "big") if cdb[0] == 0x0A else cdb[4]
    elif len(cdb) >= 14 and cdb[0] == 0x8D:
        wanted = int.from_bytes(cdb[10:14], "big")
    if 0 < wanted <= 4096 and draw(st.booleans()):
        return cdb, draw(st.binary(min_size=wanted, max_size=wanted))
    return cdb, draw(data_outs)


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


def loaded_drive() -> TapeDrive:
    drive = TapeDrive(tape_drive_identity("TD00000009"))
    cartridge = MemoryCartridge("FUZ001L8", 1_000_000)
    for record in (b"a" * 100, b"b" * 200, None, b"c" * 64, b"d" * 64, None, b"e" * 10):
        cartridge.write_filemarks(1) if record is None else cartridge.write(record)
    cartridge.locate(0, 0)
    drive.load(cartridge)
    return drive


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ssc_command(), min_size=1, max_size=8))
def test_loaded_drive_never_fails_on_random_commands(
    commands: list[tuple[bytes, bytes | None]],
) -> None:
    drive = loaded_drive()
    for cdb, data in commands:
        check_reply(drive, cdb, data)

"""The real drive and changer engines behind the ring, fed by the fake kernel.

What an initiator gets for bad input is decided end to end: the engine's sense
must survive the ring's response encoding, and short data must travel with
READ_LEN so no stale byte reaches the initiator.
"""

from __future__ import annotations

import random

import pytest

from handlers.scsi import (
    InMemoryChanger,
    MediumChanger,
    TapeDrive,
    changer_identity,
    parse_sense,
    tape_drive_identity,
)
from handlers.tcmu.fake_kernel import POISON, Completion, FakeKernel
from handlers.tcmu.ring import Ring

GOOD, CHECK_CONDITION = 0x00, 0x02


def _engines() -> dict[str, object]:
    drives = [TapeDrive(tape_drive_identity(f"TD000{i}")) for i in range(2)]
    model = InMemoryChanger(slots=8, drives=drives, mail_slots=2)
    return {"drive": drives[0], "changer": MediumChanger(changer_identity("TL0001"), model)}


def _run(
    engine: object, cdb: bytes, data_in_len: int = 0, data_out: bytes | None = None
) -> Completion:
    fake = FakeKernel()
    ring = Ring(fake.map, engine)  # type: ignore[arg-type]
    cmd_id = fake.submit(cdb, data_out=data_out, data_in_len=data_in_len)
    ring.process()
    return fake.completions()[cmd_id]


def _clear_power_on(engine: object) -> None:
    done = _run(engine, bytes(6))  # TEST UNIT READY consumes the power-on UA
    assert done.status == CHECK_CONDITION


@pytest.mark.parametrize("kind", ["drive", "changer"])
def test_unknown_opcode_gets_invalid_command_operation_code(kind: str) -> None:
    engine = _engines()[kind]
    _clear_power_on(engine)
    done = _run(engine, bytes([0xC7]) + bytes(9), data_in_len=512)
    assert done.status == CHECK_CONDITION
    sense = parse_sense(done.sense).code
    assert (sense.key, sense.asc, sense.ascq) == (0x05, 0x20, 0x00)
    assert POISON not in done.data_in


@pytest.mark.parametrize("kind", ["drive", "changer"])
def test_short_allocation_length_truncates_and_reports_read_len(kind: str) -> None:
    engine = _engines()[kind]
    # INQUIRY allocation length 5 into a 4096-byte buffer: exactly 5 bytes arrive.
    done = _run(engine, bytes([0x12, 0, 0, 0, 5, 0]), data_in_len=4096)
    assert done.status == GOOD
    assert len(done.data_in) == 5
    assert done.read_len == 5
    assert done.data_in[0] & 0x1F == (0x01 if kind == "drive" else 0x08)


@pytest.mark.parametrize("kind", ["drive", "changer"])
def test_malformed_cdbs_get_sense_and_the_loop_survives(kind: str) -> None:
    engine = _engines()[kind]
    _clear_power_on(engine)
    rng = random.Random(7)
    fake = FakeKernel()
    ring = Ring(fake.map, engine)  # type: ignore[arg-type]
    ids = []
    for _ in range(300):
        cdb = bytes(rng.getrandbits(8) for _ in range(rng.choice([6, 10, 12, 16])))
        data_out = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 8, 64])))
        if engine.wants_data_out(cdb) and data_out:  # type: ignore[attr-defined]
            ids.append(fake.submit(cdb, data_out=data_out))
        else:
            ids.append(fake.submit(cdb, data_in_len=rng.choice([0, 1, 36, 4096])))
        ring.process()
    done = fake.completions()
    assert set(done) >= set(ids)
    for cmd_id in ids:
        c = done[cmd_id]
        assert c.status in (GOOD, CHECK_CONDITION)
        if c.status == CHECK_CONDITION:
            sense = parse_sense(c.sense).code
            # 04/44/00 would mean an engine bug escaped as an internal failure.
            assert (sense.key, sense.asc) != (0x04, 0x44)
    # The ring still serves a well-formed command afterwards.
    inquiry = _run(engine, bytes([0x12, 0, 0, 0, 36, 0]), data_in_len=36)
    assert inquiry.status == GOOD and len(inquiry.data_in) == 36

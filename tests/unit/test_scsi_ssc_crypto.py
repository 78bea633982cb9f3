"""Tape data encryption: SECURITY PROTOCOL 20h pages byte-exact, AES-256-GCM records on
the reference and the pool-backed cartridge, and the DATA PROTECT sense of every refusal."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.scsi import CHECK_CONDITION, GOOD, Sense, SenseKey, TapeDrive, parse_sense
from handlers.scsi.ssc_crypto import SEAL_OVERHEAD, unseal
from tests.unit.tape_kit import make_store
from tests.unit.test_scsi_ssc import (
    FakeMedium,
    code,
    drive,
    expect,
    loaded,
    ok,
    read6,
    run,
    select_block_length,
    wfm,
    write6,
)
from thur.tape import Medium

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))

ENCRYPT, DECRYPT, MIXED, DISABLE = 0x02, 0x02, 0x03, 0x00


def sde(enc: int, dec: int, key: bytes | None = KEY, *, scope: int = 2, algorithm: int = 1,
        key_format: int = 0, rdmc: int = 0, sdk: bool = False, ckod: bool = True,
        extra: bytes = b"") -> bytes:
    """A Set Data Encryption page (0010h), as stenc builds it: scope ALL I_T NEXUS, CEEM 01b."""
    key = key or b""
    flags = (1 << 6) | (rdmc << 4) | (0x08 if sdk else 0) | (0x04 if ckod else 0)
    body = bytes([scope << 5, flags, enc, dec, algorithm, key_format, 0]) + bytes(7)
    body += struct.pack(">H", len(key)) + key + extra
    return struct.pack(">HH", 0x0010, len(body)) + body


def spout(d: TapeDrive, page: bytes, *, specific: int = 0x0010, length: int | None = None):
    n = len(page) if length is None else length
    return run(d, 0xB5, 0x20, *specific.to_bytes(2, "big"), 0, 0, *n.to_bytes(4, "big"), 0, 0,
               data=page)


def spin(d: TapeDrive, page: int, alloc: int = 8192):
    return run(d, 0xA2, 0x20, *page.to_bytes(2, "big"), 0, 0, *alloc.to_bytes(4, "big"), 0, 0)


def set_key(d: TapeDrive, enc: int = ENCRYPT, dec: int = DECRYPT, key: bytes = KEY) -> None:
    ok(spout(d, sde(enc, dec, key)))


def write(d: TapeDrive, record: bytes) -> None:
    ok(run(d, *write6(len(record)), data=record))


def rewind(d: TapeDrive) -> None:
    ok(run(d, 0x01, 0, 0, 0, 0, 0))


def status(d: TapeDrive) -> bytes:
    return ok(spin(d, 0x0020))


def key_instance(d: TapeDrive) -> int:
    return struct.unpack_from(">I", status(d), 8)[0]


# ---- SECURITY PROTOCOL IN pages, byte-exact ------------------------------------------------


def test_protocol_list_names_tape_data_encryption() -> None:
    d = drive()
    assert ok(run(d, 0xA2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0)) == bytes(6) + b"\x00\x02\x00\x20"


def test_in_and_out_support_pages() -> None:
    d = drive()
    assert ok(spin(d, 0x0000)) == bytes.fromhex("0000 000c 0000 0001 0010 0011 0020 0021")
    assert ok(spin(d, 0x0001)) == bytes.fromhex("0001 0002 0010")
    assert ok(spin(d, 0x0000, alloc=6)) == bytes.fromhex("0000 000c 0000")


def test_capabilities_page() -> None:
    d = drive()
    want = bytes.fromhex(
        "0010 0028 00" + "00" * 15  # header: EXTDECC / CFG_P not reported
        + "01 00 0014"  # algorithm index 1, descriptor length 20
        + "0a"  # AVFMV 0 (no volume), DECRYPT_C 2, ENCRYPT_C 2
        + "10"  # NONCE_C 1: the drive makes the nonce
        + "0000 0000 0020"  # no U-KAD / A-KAD, 32-byte key
        + "82"  # DKAD_C 2 (no key descriptors), RDMC_C 1 (no raw reads)
        + "00 0000 0000 0000"  # EEDK count, MSDK count, EEDK size, reserved
        + "00010014"  # AES-256-GCM-128
    )
    assert ok(spin(d, 0x0010)) == want
    d, _m = loaded()
    assert ok(spin(d, 0x0010))[24] == 0x8A  # AVFMV: valid for the mounted volume


def test_key_formats_page() -> None:
    assert ok(spin(drive(), 0x0011)) == bytes.fromhex("0011 0001 00")


def test_status_page_before_and_after_a_key() -> None:
    d = drive()
    assert status(d) == bytes.fromhex("0020 0014 00 00 00 00 00000000 01 00 0000") + bytes(8)
    set_key(d, ENCRYPT, MIXED)
    assert status(d) == bytes.fromhex("0020 0014 42 02 03 01 00000001 03 00 0000") + bytes(8)
    set_key(d, DISABLE, DISABLE)  # clears the key: counter moves on
    assert status(d) == bytes.fromhex("0020 0014 42 00 00 00 00000002 03 00 0000") + bytes(8)


def test_next_block_status_follows_the_cartridge_flag() -> None:
    d, m = loaded()
    assert code(spin(drive(), 0x0021)) == Sense.MEDIUM_NOT_PRESENT
    write(d, b"plain")
    set_key(d, ENCRYPT, MIXED)
    write(d, b"secret")
    ok(run(d, *wfm()))
    rewind(d)

    def nbes() -> bytes:
        return ok(spin(d, 0x0021))

    assert nbes() == bytes.fromhex("0021 000c 0000000000000000 03 00 00 00")
    ok(run(d, *read6(5)))
    assert nbes() == bytes.fromhex("0021 000c 0000000000000001 05 01 01 00")
    assert m.position().object_id == 1  # asking does not move
    set_key(d, DISABLE, DISABLE)
    assert nbes()[12] == 0x06  # encrypted, but no key to read it
    m.locate(0, 2)
    assert nbes() == bytes.fromhex("0021 000c 0000000000000002 02 00 00 00")  # filemark
    m.space_eod()
    assert nbes()[12] == 0x02  # end of data: not a logical block either


def test_unknown_pages_and_bad_cdb_fields() -> None:
    d = drive()
    expect(spin(d, 0x0012), 0x5, 0x24, 0x00, field=(2, 7))
    expect(spin(d, 0x0030), 0x5, 0x24, 0x00, field=(2, 7))
    expect(run(d, 0xA2, 0x20, 0, 0x10, 0x80, 0, 0, 0, 1, 0, 0, 0), 0x5, 0x24, 0x00,
           field=(4, 7))  # INC_512
    page = sde(ENCRYPT, DECRYPT)
    expect(spout(d, page, specific=0x0020), 0x5, 0x24, 0x00, field=(2, 7))
    expect(run(d, 0xB5, 0x00, 0, 0x10, 0, 0, 0, 0, 0, len(page), 0, 0, data=page),
           0x5, 0x24, 0x00, field=(1, 7))
    expect(run(d, 0xB5, 0x20, 0, 0x10, 0x80, 0, 0, 0, 0, len(page), 0, 0, data=page),
           0x5, 0x24, 0x00, field=(4, 7))


# ---- SECURITY PROTOCOL OUT: what is refused -----------------------------------------------


def param_field(resp) -> tuple[int, int | None]:  # noqa: ANN001
    s = parse_sense(bytes(resp.sense))
    assert s.code == Sense.INVALID_FIELD_IN_PARAM_LIST and s.field is not None
    assert not s.field.in_cdb
    return s.field.byte, s.field.bit


@pytest.mark.parametrize(("page", "byte"), [
    (sde(0x01, DECRYPT), 6),  # EXTERNAL encryption mode
    (sde(ENCRYPT, 0x01), 7),  # RAW decryption mode
    (sde(ENCRYPT, 0x04), 7),
    (sde(ENCRYPT, DECRYPT, algorithm=2), 8),
    (sde(ENCRYPT, DECRYPT, key_format=1), 9),
    (sde(ENCRYPT, DECRYPT, key=KEY[:16]), 18),  # AES-128 key
    (sde(ENCRYPT, DECRYPT, rdmc=2), 5),  # raw reads cannot be enabled
    (sde(ENCRYPT, DECRYPT, sdk=True), 5),
    (sde(ENCRYPT, DECRYPT, scope=3), 4),
    (sde(ENCRYPT, DECRYPT, extra=bytes([0, 0, 0, 4]) + b"name"), 52),  # a U-KAD
    (b"\x00\x11" + sde(ENCRYPT, DECRYPT)[2:], 0),  # page code
])
def test_set_data_encryption_refusals(page: bytes, byte: int) -> None:
    d = drive()
    assert param_field(spout(d, page))[0] == byte
    assert status(d)[5] == 0 and key_instance(d) == 0  # nothing changed


def test_set_data_encryption_length_errors() -> None:
    d = drive()
    page = sde(ENCRYPT, DECRYPT)
    assert code(spout(d, page[:19])) == Sense.PARAMETER_LIST_LENGTH_ERROR
    assert code(spout(d, page[:40])) == Sense.PARAMETER_LIST_LENGTH_ERROR  # cut key
    assert code(spout(d, page, length=len(page) + 1)) == Sense.PARAMETER_LIST_LENGTH_ERROR
    short = bytearray(page)
    short[2:4] = struct.pack(">H", 40)  # the page claims a shorter key than it holds
    assert code(spout(d, bytes(short))) == Sense.PARAMETER_LIST_LENGTH_ERROR


def test_public_scope_changes_nothing() -> None:
    d = drive()
    set_key(d, ENCRYPT, DECRYPT)
    ok(spout(d, sde(DISABLE, DISABLE, scope=0)))
    assert status(d)[5:7] == b"\x02\x02" and key_instance(d) == 1


# ---- the data path --------------------------------------------------------------------------


def round_trip(d: TapeDrive, m: Medium) -> None:
    records = [os.urandom(n) for n in (1, 100, 70_000)] + [b"z" * 512]
    set_key(d, ENCRYPT, DECRYPT)
    for r in records:
        write(d, r)
    ok(run(d, *wfm()))
    # On the cartridge: nonce + ciphertext + tag, flagged, never the plaintext.
    m.locate(0, 0)
    for r in records:
        stored = m.read()
        assert stored is not None and m.last_read_encrypted()
        assert len(stored) == len(r) + SEAL_OVERHEAD and (len(r) < 100 or r not in stored)
        assert unseal(KEY, stored) == r
    assert m.partition_used(0) == sum(len(r) + SEAL_OVERHEAD for r in records)
    rewind(d)
    for r in records:
        assert ok(run(d, *read6(len(r)))) == r
    assert code(run(d, *read6(10))) == Sense.FILEMARK
    # The host's block length is the plaintext's: ILI residues count plaintext bytes.
    rewind(d)
    expect(run(d, *read6(10)), 0x0, 0x00, 0x00, ili=True, info=9)
    expect(run(d, *read6(90)), 0x0, 0x00, 0x00, ili=True, info=-10)
    assert d.stats.host_written == sum(len(r) for r in records)


def test_round_trip_memory_cartridge() -> None:
    d, m = loaded()
    round_trip(d, m)


def test_round_trip_pool_cartridge(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    try:
        m = store.create("ENC001L8", capacity=100_000_000)
        d = drive()
        d.load(m)
        run(d, 0, 0, 0, 0, 0, 0)  # the medium-changed unit attention
        round_trip(d, m)
        # The flag is in the record index: it survives closing and reopening.
        assert d.unload() is m
        store.close("ENC001L8")
        again = store.open("ENC001L8")
        assert again.next_encrypted() is True
        d.load(again)
        run(d, 0, 0, 0, 0, 0, 0)
        expect(run(d, *read6(1)), 0x7, 0x74, 0x01, info=1)  # unloading cleared the key
        rewind(d)
        set_key(d, DISABLE, DECRYPT)
        assert len(ok(run(d, *read6(1)))) == 1
        d.unload()
        store.close("ENC001L8")
    finally:
        store.shutdown()


def test_fixed_block_mode_seals_each_block() -> None:
    d, m = loaded()
    select_block_length(d, 512)
    set_key(d, ENCRYPT, MIXED)
    blocks = os.urandom(512 * 3)
    ok(run(d, *write6(3, fixed=True), data=blocks))
    assert m.position().object_id == 3 and m.partition_used(0) == 3 * (512 + SEAL_OVERHEAD)
    rewind(d)
    assert ok(run(d, *read6(3, fixed=True))) == blocks


def test_wrong_key_is_data_protect_without_data() -> None:
    d, m = loaded()
    set_key(d, ENCRYPT, DECRYPT)
    write(d, b"secret" * 10)
    write(d, b"more")
    rewind(d)
    set_key(d, DISABLE, DECRYPT, key=OTHER_KEY)
    resp = run(d, *read6(60))
    expect(resp, 0x7, 0x74, 0x03, info=60)
    assert bytes(resp.data) == b""
    assert m.position().object_id == 1  # past the record, like any record read
    set_key(d, DISABLE, DECRYPT)
    assert ok(run(d, *read6(4))) == b"more"


def test_encrypted_record_without_key_or_with_decryption_off() -> None:
    d, m = loaded()
    set_key(d, ENCRYPT, DISABLE)  # write-only: reading it back is refused
    write(d, b"secret")
    rewind(d)
    expect(run(d, *read6(6)), 0x7, 0x74, 0x01, info=6)
    set_key(d, DISABLE, DISABLE)
    rewind(d)
    expect(run(d, *read6(6)), 0x7, 0x74, 0x01, info=6)
    # Fixed mode: the blocks read before the refused one are transferred.
    d2, m2 = loaded()
    select_block_length(d2, 4)
    write_fixed = run(d2, *write6(1, fixed=True), data=b"aaaa")
    ok(write_fixed)
    set_key(d2, ENCRYPT, DISABLE)
    ok(run(d2, *write6(1, fixed=True), data=b"bbbb"))
    rewind(d2)
    resp = run(d2, *read6(2, fixed=True))
    expect(resp, 0x7, 0x74, 0x01, info=1)
    assert bytes(resp.data) == b"aaaa"


def test_plain_record_in_decrypt_mode_and_mixed_mode() -> None:
    d, m = loaded()
    write(d, b"plain")
    set_key(d, ENCRYPT, DECRYPT)
    write(d, b"sealed")
    rewind(d)
    resp = run(d, *read6(5))
    expect(resp, 0x7, 0x74, 0x02, info=5)
    assert bytes(resp.data) == b""
    assert ok(run(d, *read6(6))) == b"sealed"
    set_key(d, ENCRYPT, MIXED)
    rewind(d)
    assert ok(run(d, *read6(5))) == b"plain"
    assert ok(run(d, *read6(6))) == b"sealed"


def test_truncated_sealed_record_fails_integrity() -> None:
    d, m = loaded()
    m.write(b"too short", encrypted=True)
    set_key(d, DISABLE, DECRYPT)
    rewind(d)
    expect(run(d, *read6(9)), 0x7, 0x74, 0x04, info=9)


def test_verify_decrypts_too() -> None:
    d, m = loaded()
    set_key(d, ENCRYPT, DECRYPT)
    write(d, b"x" * 100)
    rewind(d)
    ok(run(d, 0x13, 0, 0, 0, 100, 0))
    rewind(d)
    set_key(d, DISABLE, DECRYPT, key=OTHER_KEY)
    resp = run(d, 0x13, 0, 0, 0, 100, 0)
    expect(resp, 0x7, 0x74, 0x03, info=100)


def test_key_cleared_on_unload_and_by_the_changer() -> None:
    d, m = loaded()
    set_key(d, ENCRYPT, DECRYPT)
    n = key_instance(d)
    ok(run(d, 0x1B, 0, 0, 0, 0, 0))  # UNLOAD
    assert status(d)[5:8] == b"\x00\x00\x00" and key_instance(d) == n + 1
    ok(run(d, 0x1B, 0, 0, 0, 1, 0))  # LOAD again: still no key
    write(d, b"plain now")
    assert m.last_read_encrypted() is False and m.next_encrypted() is None
    m.locate(0, 0)
    assert m.next_encrypted() is False
    set_key(d, ENCRYPT, DECRYPT)
    assert d.unload() is m
    assert status(d)[5] == 0 and d.encryption.key is None
    assert TapeDrive(d.identity).encryption.key is None  # power on: no key


def test_write_after_unload_is_plain() -> None:
    d, m = loaded()
    set_key(d, ENCRYPT, DECRYPT)
    d.unload()
    other = FakeMedium("TST002L8")
    d.load(other)
    run(d, 0, 0, 0, 0, 0, 0)
    write(d, b"data")
    other.locate(0, 0)
    assert other.read() == b"data" and not other.last_read_encrypted()


# ---- fuzz: random Set Data Encryption pages and reads never break the drive ----------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), max_size=4),
       st.integers(0, 80), st.binary(max_size=3))
def test_fuzzed_pages_answer_well_formed(edits: list[tuple[int, int]], cut: int,
                                         tail: bytes) -> None:
    d, m = loaded()
    write(d, b"plain")
    m.write(os.urandom(40), encrypted=True)
    page = bytearray(sde(ENCRYPT, MIXED))
    for at, value in edits:
        if at < len(page):
            page[at] = value
    data = bytes(page[:cut]) + tail
    resp = spout(d, data)
    assert resp.status in (GOOD, CHECK_CONDITION)
    if resp.status == CHECK_CONDITION:
        assert parse_sense(bytes(resp.sense)).code.key == SenseKey.ILLEGAL_REQUEST
    rewind(d)
    for _ in range(3):
        r = run(d, *read6(100, sili=True))
        if r.status == CHECK_CONDITION:
            assert parse_sense(bytes(r.sense)).code.key in (SenseKey.DATA_PROTECT,
                                                       SenseKey.NO_SENSE,
                                                       SenseKey.BLANK_CHECK)
        for page_code in (0x20, 0x21):
            assert spin(d, page_code).status == GOOD

"""The drive's data path, byte-exact: READ/WRITE residues, filemarks, EOD, BOP, early warning,
overflow, SPACE/LOCATE/READ POSITION, and the command sequences mt-st and tar produce."""

from __future__ import annotations

import struct

from handlers.scsi import Sense
from tests.unit.test_scsi_ssc import (
    code,
    expect,
    loaded,
    locate10,
    locate16,
    ok,
    position,
    read6,
    run,
    select_block_length,
    space6,
    space16,
    wfm,
    write6,
)

NO_SENSE, BLANK_CHECK, VOLUME_OVERFLOW, ILLEGAL = 0x0, 0x8, 0xD, 0x5


def write(d, record: bytes) -> None:
    ok(run(d, *write6(len(record)), data=record))


def three_two(d) -> None:
    """Write 3 records, a filemark, 2 records (then rewind)."""
    for i in range(3):
        write(d, bytes([i]) * 100)
    ok(run(d, *wfm(1)))
    write(d, b"d" * 50)
    write(d, b"e" * 60)
    ok(run(d, 0x01, 0, 0, 0, 0, 0))


# ---- READ / WRITE, variable mode -------------------------------------------------------


def test_positions_after_three_records_filemark_two_records() -> None:
    d, m = loaded()
    for i in range(3):
        write(d, bytes([i]) * 100)
        assert position(d) == (0, i + 1, 0)
    ok(run(d, *wfm(1)))
    assert position(d) == (0, 4, 1)
    write(d, b"d" * 50)
    write(d, b"e" * 60)
    assert position(d) == (0, 6, 1)
    short = ok(run(d, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert short[0] == 0 and struct.unpack_from(">II", short, 4) == (6, 6)
    ok(run(d, 0x01, 0, 0, 0, 0, 0))
    assert position(d) == (0, 0, 0)
    assert ok(run(d, *read6(100))) == b"\x00" * 100


def test_read_at_filemark_then_eod() -> None:
    d, _ = loaded()
    three_two(d)
    for i in range(3):
        assert ok(run(d, *read6(100))) == bytes([i]) * 100
    resp = run(d, *read6(1000))
    expect(resp, NO_SENSE, 0x00, 0x01, info=1000, fm=True)
    assert bytes(resp.data) == b""
    assert position(d) == (0, 4, 1)  # past the filemark
    assert ok(run(d, *read6(50))) == b"d" * 50
    assert ok(run(d, *read6(60))) == b"e" * 60
    resp = run(d, *read6(4096))
    expect(resp, BLANK_CHECK, 0x00, 0x05, info=4096)
    assert position(d) == (0, 6, 1)  # EOD does not move


def test_ili_short_record_with_and_without_sili() -> None:
    d, _ = loaded()
    three_two(d)
    resp = run(d, *read6(256))
    expect(resp, NO_SENSE, 0x00, 0x00, info=156, ili=True)
    assert bytes(resp.data) == b"\x00" * 100
    resp = run(d, *read6(256, sili=True))
    assert ok(resp) == b"\x01" * 100  # GOOD, short transfer (the ring reports READ_LEN)


def test_ili_long_record_truncates_with_negative_information() -> None:
    d, _ = loaded()
    three_two(d)
    for sili in (False, True):
        resp = run(d, *read6(40, sili=sili))
        expect(resp, NO_SENSE, 0x00, 0x00, info=-60, ili=True)
        assert bytes(resp.sense)[3:7] == b"\xff\xff\xff\xc4"  # two's complement of -60
        assert len(resp.data) == 40
    assert position(d) == (0, 2, 0)  # the long record is consumed


def test_zero_length_read_and_write_do_not_move() -> None:
    d, m = loaded()
    three_two(d)
    assert ok(run(d, *read6(0))) == b""
    ok(run(d, *write6(0), data=b""))
    assert position(d) == (0, 0, 0) and len(m._parts[0]) == 6


def test_write_data_out_must_match_the_cdb() -> None:
    d, m = loaded()
    expect(run(d, *write6(100), data=b"x" * 99), ILLEGAL, 0x24, 0x00, field=(2, 7))
    expect(run(d, *write6(100), data=b"x" * 101), ILLEGAL, 0x24, 0x00, field=(2, 7))
    expect(run(d, *write6(100)), ILLEGAL, 0x24, 0x00, field=(2, 7))
    assert m.position().object_id == 0 and m.partition_used(0) == 0


def test_write_truncates_what_follows() -> None:
    d, m = loaded()
    three_two(d)
    ok(run(d, *space6(0, 1)))
    write(d, b"new")
    assert position(d) == (0, 2, 0)
    expect(run(d, *read6(10)), BLANK_CHECK, 0x00, 0x05, info=10)


# ---- fixed-block mode ------------------------------------------------------------------


def test_fixed_mode_blocks_and_residues_in_blocks() -> None:
    d, m = loaded()
    select_block_length(d, 512)
    assert bytes(run(d, 0x1A, 0, 0, 0, 12, 0).data)[9:12] == bytes([0, 2, 0])
    ok(run(d, *write6(4, fixed=True), data=bytes(range(256)) * 8))  # 4 blocks = 4 records
    ok(run(d, *wfm(1)))
    m.write(b"odd" * 10)  # a 30-byte record
    assert m.position().object_id == 6
    ok(run(d, 0x01, 0, 0, 0, 0, 0))
    assert ok(run(d, *read6(3, fixed=True))) == (bytes(range(256)) * 2) * 3
    resp = run(d, *read6(3, fixed=True))  # one block left before the filemark
    expect(resp, NO_SENSE, 0x00, 0x01, info=2, fm=True)
    assert len(resp.data) == 512
    resp = run(d, *read6(2, fixed=True))  # a 30-byte record where a 512-byte block was due
    expect(resp, NO_SENSE, 0x00, 0x00, info=2, ili=True)
    assert bytes(resp.data) == b""
    resp = run(d, *read6(5, fixed=True))
    expect(resp, BLANK_CHECK, 0x00, 0x05, info=5)
    # SILI with FIXED is invalid; fixed data-out must be exactly blocks x block size.
    assert code(run(d, *read6(1, fixed=True, sili=True))) == Sense.INVALID_FIELD_IN_CDB
    expect(run(d, *write6(2, fixed=True), data=b"x" * 512), ILLEGAL, 0x24, 0x00, field=(2, 7))
    # Variable-length transfers stay possible in fixed mode (FIXED=0).
    ok(run(d, *write6(7), data=b"1234567"))
    # Back to variable mode: FIXED=1 is now an invalid field.
    select_block_length(d, 0)
    assert code(run(d, *read6(1, fixed=True))) == Sense.INVALID_FIELD_IN_CDB
    assert code(run(d, *write6(1, fixed=True), data=b"")) == Sense.INVALID_FIELD_IN_CDB


# ---- early warning and overflow ------------------------------------------------------------


def test_early_warning_then_volume_overflow_variable() -> None:
    d, m = loaded(capacity=100_000)  # early warning 2 % before the end: at 98,000 bytes
    for _ in range(9):
        write(d, b"r" * 10_000)
    resp = run(d, *write6(9_000), data=b"w" * 9_000)  # crosses early warning: written
    expect(resp, NO_SENSE, 0x00, 0x02, info=0, eom=True)
    assert m.partition_used(0) == 99_000
    pos = ok(run(d, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert pos[0] & 0x40 and pos[0] & 0x01  # EOP (past early warning) and BPEW
    expect(run(d, *wfm(1)), NO_SENSE, 0x00, 0x02, info=0, eom=True)  # still past EW
    resp = run(d, *write6(2_000), data=b"x" * 2_000)  # does not fit: not written
    expect(resp, VOLUME_OVERFLOW, 0x00, 0x02, info=2_000, eom=True)
    assert m.partition_used(0) == 99_000 and position(d) == (0, 11, 1)
    # Every acknowledged record reads back.
    ok(run(d, 0x01, 0, 0, 0, 0, 0))
    ok(run(d, *space6(0, 9)))
    assert ok(run(d, *read6(9_000))) == b"w" * 9_000


def test_volume_overflow_fixed_reports_blocks_not_written() -> None:
    d, m = loaded(capacity=100_000)
    select_block_length(d, 10_000)
    resp = run(d, *write6(12, fixed=True), data=b"b" * 120_000)
    expect(resp, VOLUME_OVERFLOW, 0x00, 0x02, info=2, eom=True)
    assert m.position().object_id == 10


# ---- SPACE -------------------------------------------------------------------------------


def test_space_blocks_stops_at_filemark_eod_and_bop() -> None:
    d, _ = loaded()
    three_two(d)
    expect(run(d, *space6(0, 5)), NO_SENSE, 0x00, 0x01, info=2, fm=True)
    assert position(d) == (0, 4, 1)  # past the filemark
    expect(run(d, *space6(0, 5)), BLANK_CHECK, 0x00, 0x05, info=3)
    assert position(d) == (0, 6, 1)
    ok(run(d, *space6(0, -1)))
    expect(run(d, *space6(0, -3)), NO_SENSE, 0x00, 0x01, info=2, fm=True)
    assert position(d) == (0, 3, 0)  # on the BOP side of the filemark
    expect(run(d, *space6(0, -5)), NO_SENSE, 0x00, 0x04, info=2, eom=True)
    assert position(d) == (0, 0, 0)
    ok(run(d, *space6(0, 0)))  # count 0: no motion


def test_space_filemarks_eod_and_invalid_codes() -> None:
    d, _ = loaded()
    three_two(d)
    ok(run(d, *space6(1, 1)))
    assert position(d) == (0, 4, 1)
    expect(run(d, *space6(1, 2)), BLANK_CHECK, 0x00, 0x05, info=2)
    ok(run(d, *space6(1, -1)))
    assert position(d) == (0, 3, 0)
    expect(run(d, *space6(1, -1)), NO_SENSE, 0x00, 0x04, info=1, eom=True)
    ok(run(d, *space6(3, 0)))
    assert position(d) == (0, 6, 1)
    for bad in (2, 4, 5):
        assert code(run(d, *space6(bad, 1))) == Sense.INVALID_FIELD_IN_CDB
    # SPACE(16): 64-bit signed counts, PARAMETER LENGTH must be 0.
    ok(run(d, *space16(0, -2)))
    assert position(d) == (0, 4, 1)
    resp = run(d, *space16(1, -3))
    expect(resp, NO_SENSE, 0x00, 0x04, info=2, eom=True)
    bad = space16(0, 1)
    bad[13] = 4
    assert code(run(d, *bad)) == Sense.INVALID_FIELD_IN_CDB


def test_space_huge_residue_does_not_fit_fixed_sense() -> None:
    d, _ = loaded()
    three_two(d)
    resp = run(d, *space16(0, 2**40))
    assert code(resp) == Sense.FILEMARK
    assert bytes(resp.sense)[0] == 0x70  # INFORMATION cannot hold it: VALID = 0


# ---- LOCATE ------------------------------------------------------------------------------


def test_locate_and_past_eod() -> None:
    d, _ = loaded()
    three_two(d)
    ok(run(d, *locate10(5)))
    assert position(d) == (0, 5, 1)
    ok(run(d, *locate10(2, bt=True)))
    assert position(d) == (0, 2, 0)
    expect(run(d, *locate10(99)), BLANK_CHECK, 0x00, 0x05)
    assert position(d) == (0, 6, 1)  # positioned at EOD
    ok(run(d, *locate16(1, dest=1)))  # logical file 1: just past the first filemark
    assert position(d) == (0, 4, 1)
    ok(run(d, *locate16(0, dest=3)))  # end of data
    assert position(d) == (0, 6, 1)
    expect(run(d, *locate16(2, dest=1)), BLANK_CHECK, 0x00, 0x05)
    assert code(run(d, *locate16(0, dest=2))) == Sense.INVALID_FIELD_IN_CDB


def test_locate_to_a_missing_partition() -> None:
    d, _ = loaded()
    three_two(d)
    resp = run(d, *locate10(0, partition=1))
    expect_field = bytes(resp.sense)
    assert code(resp) == Sense.INVALID_FIELD_IN_CDB
    assert expect_field[15:18] == bytes([0xCF, 0, 8])  # points at the PARTITION byte
    assert position(d) == (0, 0, 0)  # did not move


# ---- WRITE FILEMARKS, ERASE, VERIFY, ALLOW OVERWRITE -----------------------------------


def test_write_filemarks_zero_flushes_and_16_checks_position() -> None:
    d, m = loaded()
    write(d, b"abc")
    flushes = m.flushes
    ok(run(d, *wfm(0)))
    assert m.flushes == flushes + 1 and position(d) == (0, 1, 0)
    ok(run(d, 0x10, 0x01, 0, 0, 2, 0))  # IMMED accepted
    assert position(d) == (0, 3, 2)
    assert code(run(d, 0x10, 0x02, 0, 0, 1, 0)) == Sense.INVALID_FIELD_IN_CDB  # setmarks
    wf16 = [0x80, 0, 0, 0, *(3).to_bytes(8, "big"), 0, 0, 1, 0]
    ok(run(d, *wf16))
    assert position(d) == (0, 4, 3)
    assert code(run(d, *wf16)) == Sense.INVALID_FIELD_IN_CDB  # object 3 is not here


def test_erase_worm_and_write_protect() -> None:
    d, m = loaded()
    three_two(d)
    ok(run(d, *space6(1, 1)))
    ok(run(d, 0x19, 0x01, 0, 0, 0, 0))  # long erase from the position
    ok(run(d, *space6(3, 0)))
    assert position(d) == (0, 4, 1)
    d, m = loaded(worm=True)
    write(d, b"kept")
    ok(run(d, 0x01, 0, 0, 0, 0, 0))
    expect(run(d, *write6(3), data=b"new"), 0x7, 0x30, 0x0C, info=3)
    expect(run(d, 0x19, 0, 0, 0, 0, 0), 0x7, 0x30, 0x0C)
    ok(run(d, *space6(3, 0)))
    write(d, b"append")  # appending at EOD is allowed on WORM
    assert 0x3C in d.tapealerts  # WORM overwrite attempted
    d, m = loaded(write_protected=True)
    expect(run(d, *write6(3), data=b"new"), 0x7, 0x27, 0x00, info=3)
    expect(run(d, *wfm(1)), 0x7, 0x27, 0x00, info=1)
    assert bytes(run(d, 0x1A, 0, 0, 0, 12, 0).data)[2] & 0x80  # WP in the mode header


def test_verify_reads_without_transfer() -> None:
    d, _ = loaded()
    three_two(d)
    assert ok(run(d, 0x13, 0, 0, 0, 100, 0)) == b""
    resp = run(d, 0x13, 0, 0, 0, 10, 0)
    expect(resp, NO_SENSE, 0x00, 0x00, info=-90, ili=True)
    assert bytes(resp.data) == b""
    assert code(run(d, 0x13, 0x02, 0, 0, 1, 0)) == Sense.INVALID_FIELD_IN_CDB  # BYTCMP
    ok(run(d, 0x13, 0, 0, 0, 100, 0))
    expect(run(d, 0x13, 0, 0, 0, 100, 0), NO_SENSE, 0x00, 0x01, info=100, fm=True)
    assert d.stats.host_read == 0


def test_allow_overwrite_is_accepted() -> None:
    d, _ = loaded()
    ok(run(d, 0x82, 0, 0x01, 0, *(0).to_bytes(8, "big"), 0, 0, 0, 0))
    assert code(run(d, 0x82, 0, 0x03, 0, *bytes(8), 0, 0, 0, 0)) == Sense.INVALID_FIELD_IN_CDB


# ---- what initiators send ----------------------------------------------------------------


def test_mt_st_sequence() -> None:
    """The CDBs st sends for mt weof/fsf/bsf/fsr/bsr/eod/tell/seek/erase/setblk."""
    d, _ = loaded()
    for n in range(3):  # three files of two records each
        write(d, b"A" * (n + 1))
        write(d, b"B" * (n + 1))
        ok(run(d, *wfm(1)))  # mt weof
    ok(run(d, 0x01, 0, 0, 0, 0, 0))  # mt rewind
    ok(run(d, *space6(1, 2)))  # mt fsf 2
    assert position(d) == (0, 6, 2)
    ok(run(d, *space6(0, 1)))  # mt fsr 1
    assert position(d) == (0, 7, 2)
    ok(run(d, *space6(0, -1)))  # mt bsr 1
    ok(run(d, *space6(1, -1)))  # mt bsf 1: BOP side of the filemark
    assert position(d) == (0, 5, 1)
    # mt eod without fast-eod: space forward 0x7fffff filemarks, then SPACE EOD.
    expect(run(d, *space6(1, 0x7FFFFF)), BLANK_CHECK, 0x00, 0x05, info=0x7FFFFF - 2)
    ok(run(d, *space6(3, 0)))
    tell = ok(run(d, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0))  # mt tell: READ POSITION BT
    assert struct.unpack_from(">I", tell, 4)[0] == 9
    ok(run(d, *locate10(3, bt=True)))  # mt seek 3
    assert position(d) == (0, 3, 1)
    ok(run(d, 0x19, 0x01, 0, 0, 0, 0))  # mt erase (long)
    ok(run(d, *space6(3, 0)))
    assert position(d) == (0, 3, 1)
    select_block_length(d, 1024)  # mt setblk 1024
    ok(run(d, *write6(2, fixed=True), data=b"z" * 2048))
    select_block_length(d, 0)  # mt setblk 0
    assert position(d) == (0, 5, 1)


def test_tar_style_large_records() -> None:
    """tar -b 128 (64 KiB) and -b 2048 (1 MiB) records; dd bs=256k reads a 64 KiB record."""
    d, _ = loaded(capacity=1_000 * 10**6)
    small = [bytes([i]) * 65536 for i in range(4)]
    big = [bytes([0x80 + i]) * (1 << 20) for i in range(3)]
    for record in small:
        write(d, record)
    ok(run(d, *wfm(1)))
    for record in big:
        write(d, record)
    ok(run(d, *wfm(1)))
    ok(run(d, 0x01, 0, 0, 0, 0, 0))
    resp = run(d, *read6(262144))  # st in variable mode, no SILI
    expect(resp, NO_SENSE, 0x00, 0x00, info=262144 - 65536, ili=True)
    assert bytes(resp.data) == small[0]
    for record in small[1:]:
        assert ok(run(d, *read6(65536))) == record
    assert len(run(d, *read6(65536)).data) == 0  # the filemark: 0 bytes
    for record in big:
        assert ok(run(d, *read6(1 << 20))) == record
    expect(run(d, *read6(1 << 20)), NO_SENSE, 0x00, 0x01, info=1 << 20, fm=True)
    expect(run(d, *read6(1 << 20)), BLANK_CHECK, 0x00, 0x05, info=1 << 20)
    assert d.stats.host_written == 4 * 65536 + 3 * (1 << 20)

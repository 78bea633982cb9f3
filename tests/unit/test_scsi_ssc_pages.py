"""Partitioning (page 11h staging + FORMAT MEDIUM, as mt-st and LTFS do it), SET CAPACITY,
the drive's log pages, cleaning cartridges and SECURITY PROTOCOL IN/OUT."""

from __future__ import annotations

import struct

from handlers.scsi import Sense
from tests.unit.test_scsi_ssc import (
    FakeMedium,
    code,
    drive,
    expect,
    loaded,
    locate10,
    ok,
    position,
    read6,
    run,
    wfm,
    write6,
)
from thur.tape import LTO8_NATIVE_CAPACITY

TB = LTO8_NATIVE_CAPACITY


def page11_via_st(d) -> bytes:
    """MODE SENSE(6) page 11h with block descriptors, as st's read_mode_page(PART_PAGE, 0)."""
    data = ok(run(d, 0x1A, 0, 0x11, 0, 255, 0))
    assert data[3] == 8 and data[12] == 0x11
    return data


def st_mkpartition(d, size_mb: int) -> None:
    """What Linux st (>= 4.6) sends for `mt mkpartition SIZE` (SIZE in MB, partition 1)."""
    ok(run(d, 0x1B, 0, 0, 0, 1, 0))  # LOAD: position at BOP
    bp = bytearray(page11_via_st(d))
    pgo = 4 + bp[3]
    flags = bp[pgo + 4]
    assert flags & 0x04, "POFM: st must follow with FORMAT MEDIUM"
    psum, units = 0x10, 0  # MB
    if flags & 0x18 == 0x18 and size_mb >= 1000 and size_mb % 1000 == 0:
        size_mb, psum, units = size_mb // 1000, 0x18, 9
    psdo = pgo + 8
    bp[psdo : psdo + 2] = b"\xff\xff"  # psd_cnt (2) > max additional partitions (1)
    psdo += 2
    bp[psdo : psdo + 2] = struct.pack(">H", size_mb)
    bp[pgo + 3] = 1
    bp[pgo + 4] = 0x20 | psum | (flags & 0x07)
    bp[pgo + 6], bp[pgo + 7] = units, 0
    bp[pgo + 1] = 6 + 2 * 2
    bp[0] = bp[1] = 0
    bp[2] &= 0x7F
    bp[pgo] &= 0x3F
    length = pgo + bp[pgo + 1] + 2
    ok(run(d, 0x15, 0x10, 0, 0, length, 0, data=bytes(bp[:length])))
    ok(run(d, 0x04, 0, 0x01, 0, 0, 0))  # FORMAT MEDIUM: partition


def ltfs_format(d, index_partition: int = 1, fmt: int = 0x01) -> None:
    """What LTFS's tape_format() sends: MODE SENSE(10)/SELECT(10) of a 28-byte buffer."""
    ok(run(d, 0x1B, 0, 0, 0, 1, 0))
    mp = bytearray(ok(run(d, 0x5A, 0, 0x11, 0, 0, 0, 0, 0, 28, 0)))
    assert len(mp) == 28 and mp[16] == 0x11 and mp[17] == 0x0A
    mp[0] = mp[1] = 0
    mp[19] = 1
    mp[20] = 0x20 | (mp[20] & 0x1F)
    mp[22] = 9
    if index_partition == 1:
        mp[24:28] = b"\xff\xff\x00\x01"
    else:
        mp[24:28] = b"\x00\x01\xff\xff"
    ok(run(d, 0x55, 0x10, 0, 0, 0, 0, 0, 0, 28, 0, data=bytes(mp)))
    ok(run(d, 0x04, 0, fmt, 0, 0, 0))


def test_mt_st_mkpartition_setpartition_partseek() -> None:
    d, m = loaded(capacity=TB)
    ok(run(d, *write6(3), data=b"old"))
    st_mkpartition(d, 2000)
    assert list(m.partition_capacities()) == [TB - 2 * 10**9, 2 * 10**9]
    page = page11_via_st(d)[12:]
    assert page[3] == 1 and page[4] == 0x3C and page[6] == 9
    assert struct.unpack_from(">HH", page, 8) == ((TB - 2 * 10**9) // 10**9, 2)
    # mt setpartition 1: st counts partitions from MODE SENSE(6) DBD page 11h.
    nodbd = ok(run(d, 0x1A, 0x08, 0x11, 0, 255, 0))
    assert nodbd[4 + 3] + 1 == 2
    # mt partseek 1 0: LOCATE(10) with BT and CP.
    ok(run(d, *locate10(0, partition=1, bt=True)))
    assert position(d) == (1, 0, 0)
    assert ok(run(d, 0x1A, 0x08, 0x10, 0, 255, 0))[4 + 3] == 1  # active partition
    ok(run(d, *write6(5), data=b"part1"))
    ok(run(d, *locate10(0, partition=0)))
    expect(run(d, *read6(10)), 0x8, 0x00, 0x05, info=10)  # partition 0 was erased
    ok(run(d, *locate10(0, partition=1)))
    assert ok(run(d, *read6(5))) == b"part1"
    ok(run(d, 0x01, 0, 0, 0, 0, 0))  # REWIND goes to BOP of partition 0
    assert position(d) == (0, 0, 0)
    # mt mkpartition 0: FORMAT MEDIUM 00h alone (POFM) makes one partition again.
    ok(run(d, 0x04, 0, 0x00, 0, 0, 0))
    assert list(m.partition_capacities()) == [TB]


def test_mt_st_mkpartition_in_megabytes() -> None:
    d, m = loaded(capacity=TB)
    st_mkpartition(d, 1500)  # not a multiple of 1000: PSUM 10b (MB)
    assert list(m.partition_capacities()) == [TB - 1500 * 10**6, 1500 * 10**6]


def test_ltfs_format_and_unformat() -> None:
    d, m = loaded(capacity=TB)
    ltfs_format(d, index_partition=1, fmt=0x02)  # "hard" format: destroy then partition
    assert list(m.partition_capacities()) == [TB - 10**9, 10**9]
    ltfs_format(d, index_partition=0)
    assert list(m.partition_capacities()) == [10**9, TB - 10**9]
    ok(run(d, 0x04, 0, 0x00, 0, 0, 0))
    assert list(m.partition_capacities()) == [TB]


def test_staging_is_only_applied_by_format() -> None:
    d, m = loaded(capacity=TB)
    bp = bytearray(page11_via_st(d))
    bp[0] = 0
    bp[12 + 3], bp[12 + 4] = 1, 0x20 | 0x18 | 0x04
    bp[12 + 8 : 12 + 12] = struct.pack(">HH", 5000, 8000)  # 13 TB does not fit 12 TB
    resp = run(d, 0x15, 0x10, 0, 0, 24, 0, data=bytes(bp))
    want_field = bytes([0x8F, 0, 12 + 8])  # parameter list, byte 20, bit 7
    assert code(resp) == Sense.INVALID_FIELD_IN_PARAM_LIST
    assert bytes(resp.sense)[15:18] == want_field
    bp[12 + 8 : 12 + 12] = struct.pack(">HH", 4000, 8000)
    ok(run(d, 0x15, 0x10, 0, 0, 24, 0, data=bytes(bp)))
    assert list(m.partition_capacities()) == [TB]  # staged, not applied
    assert d.layout_staged and page11_via_st(d)[12 + 3] == 1
    ok(run(d, 0x04, 0, 0x01, 0, 0, 0))
    assert list(m.partition_capacities()) == [4 * 10**12, 8 * 10**12]
    assert not d.layout_staged
    # FDP: the drive chooses (two halves).
    bp = bytearray(page11_via_st(d))
    bp[0] = 0
    bp[12 + 4] = 0x80 | 0x18 | 0x04
    ok(run(d, 0x15, 0x10, 0, 0, 24, 0, data=bytes(bp)))
    ok(run(d, 0x04, 0, 0x01, 0, 0, 0))
    assert list(m.partition_capacities()) == [TB // 2, TB // 2]
    # Two of FDP/SDP/IDP at once is invalid.
    bp[12 + 4] = 0xA0 | 0x18 | 0x04
    assert code(run(d, 0x15, 0x10, 0, 0, 24, 0, data=bytes(bp))) == (
        Sense.INVALID_FIELD_IN_PARAM_LIST)


def test_format_requires_bop0_and_respects_worm() -> None:
    d, m = loaded()
    ok(run(d, *write6(2), data=b"ab"))
    expect(run(d, 0x04, 0, 0x00, 0, 0, 0), 0x5, 0x3B, 0x0C)
    expect(run(d, 0x0B, 0, 0, 0x80, 0, 0), 0x5, 0x3B, 0x0C)
    assert code(run(d, 0x04, 0, 0x03, 0, 0, 0)) == Sense.INVALID_FIELD_IN_CDB
    assert code(run(d, 0x04, 0, 0x00, 0, 1, 0)) == Sense.INVALID_FIELD_IN_CDB
    d, m = loaded(worm=True)
    ok(run(d, *write6(2), data=b"ab"))
    ok(run(d, 0x01, 0, 0, 0, 0, 0))
    expect(run(d, 0x04, 0, 0x00, 0, 0, 0), 0x7, 0x30, 0x0C)
    expect(run(d, 0x0B, 0, 0, 0x80, 0, 0), 0x7, 0x30, 0x0C)


def test_set_capacity() -> None:
    d, m = loaded(capacity=TB)
    ok(run(d, 0x0B, 0, 0, 0x80, 0x00, 0))  # proportion 8000h of 65535
    assert m.capacity_bytes == TB * 0x8000 // 0xFFFF
    page = page11_via_st(d)[12:]
    assert page[3] == 0
    assert code(run(d, 0x0B, 0, 0, 0, 0, 0)) == Sense.INVALID_FIELD_IN_CDB


# ---- log pages ---------------------------------------------------------------------------


def log_params(data: bytes) -> dict[int, bytes]:
    out, pos = {}, 4
    end = 4 + struct.unpack_from(">H", data, 2)[0]
    while pos < end:
        param, _, length = struct.unpack_from(">HBB", data, pos)
        out[param] = data[pos + 4 : pos + 4 + length]
        pos += 4 + length
    return out


def log_sense(d, page: int) -> dict[int, bytes]:
    return log_params(ok(run(d, 0x4D, 0, 0x40 | page, 0, 0, 0, 0, 0x10, 0, 0)))


def test_log_pages_after_writing() -> None:
    d, m = loaded(capacity=TB)
    ltfs_format(d)
    ok(run(d, *write6(10), data=b"x" * 10))
    ok(run(d, *wfm(1)))
    ok(run(d, 0x01, 0, 0, 0, 0, 0))
    ok(run(d, *read6(10)))
    seq = log_sense(d, 0x0C)
    assert int.from_bytes(seq[0x0000], "big") == 10 and int.from_bytes(seq[0x0003], "big") == 10
    assert seq[0x0100] == b"\x00"
    vs = log_sense(d, 0x17)
    assert vs[0x0000] == b"\x01" and int.from_bytes(vs[0x0001], "big") == 1
    assert vs[0x0042].rstrip() == b"TST001L8" and vs[0x0081] == b"\x00"
    records = vs[0x0202]
    assert len(records) == 16
    assert struct.unpack_from(">BxHI", records, 0) == (7, 0, (TB - 10**9) // 10**6)
    assert struct.unpack_from(">BxHI", records, 8) == (7, 1, 1000)
    assert struct.unpack_from(">I", vs[0x0204], 4)[0] == (TB - 10**9 - 10) // 10**6
    dc = log_sense(d, 0x1B)
    assert int.from_bytes(dc[0x0000], "big") == 100
    assert int.from_bytes(dc[0x0007], "big") == 10 and int.from_bytes(dc[0x0006], "big") == 0


def test_cleaning_cartridge_and_tapealert() -> None:
    d = drive()
    d.request_cleaning()
    assert log_sense(d, 0x0C)[0x0100] == b"\x01"
    ta = log_sense(d, 0x2E)
    assert ta[0x14] == b"\x01"  # clean now (read-and-clear)
    cln = FakeMedium("CLN001L1")
    d.load(cln)
    assert code(run(d, 0, 0, 0, 0, 0, 0)) == Sense.MEDIUM_MAY_HAVE_CHANGED
    expect(run(d, 0, 0, 0, 0, 0, 0), 0x2, 0x30, 0x03)
    expect(run(d, *read6(10)), 0x2, 0x30, 0x03)
    expect(run(d, *write6(1), data=b"x"), 0x2, 0x30, 0x03)
    assert not d.cleaning_required and log_sense(d, 0x0C)[0x0100] == b"\x00"
    ok(run(d, 0x1B, 0, 0, 0, 0, 0))  # unload works
    assert d.unload() is cln


# ---- SECURITY PROTOCOL -------------------------------------------------------------------


def test_security_protocol_in_lists_protocols() -> None:
    d = drive()
    data = ok(run(d, 0xA2, 0x00, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0))
    assert data == bytes(6) + b"\x00\x02\x00\x20"  # 20h: see test_scsi_ssc_crypto
    assert ok(run(d, 0xA2, 0x00, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0)) == bytes(4)
    assert len(ok(run(d, 0xA2, 0x00, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0))) == 4
    for cdb in ([0xA2, 0x21, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],  # an unsupported protocol
                [0xA2, 0x00, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0],
                [0xA2, 0x00, 0, 0, 0x80, 0, 0, 0, 1, 0, 0, 0]):
        assert code(run(d, *cdb)) == Sense.INVALID_FIELD_IN_CDB
    resp = run(d, 0xB5, 0x20, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, data=bytes(4))
    assert code(resp) == Sense.INVALID_FIELD_IN_CDB

"""READ ATTRIBUTE / WRITE ATTRIBUTE (MAM): computed device attributes, stored host ones,
the way sg_read_attr and LTFS ask, and refusals that change nothing."""

from __future__ import annotations

import struct

from handlers.scsi import Sense
from tests.unit.test_scsi_ssc import FakeMedium, code, drive, expect, loaded, ok, run
from tests.unit.test_scsi_ssc_pages import ltfs_format
from thur.tape import LTO8_NATIVE_CAPACITY

MIB = 1 << 20


def read_attr(d, sa: int = 0, first: int = 0, *, partition: int = 0, alloc: int = 65536,
              volume: int = 0):
    cdb = [0x8C, sa, 0, 0, 0, volume, 0, partition, *first.to_bytes(2, "big"),
           *alloc.to_bytes(4, "big"), 0, 0]
    return run(d, *cdb)


def write_attr(d, attrs: list[tuple[int, int, bytes]], *, ltfs_length: bool = False):
    body = b"".join(struct.pack(">HBH", i, f, len(v)) + v for i, f, v in attrs)
    # LTFS declares PARAMETER DATA LENGTH as the whole list including its own 4 bytes.
    declared = len(body) + 4 if ltfs_length else len(body)
    data = struct.pack(">I", declared) + body
    cdb = [0x8D, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, *len(data).to_bytes(4, "big"), 0, 0]
    return run(d, *cdb, data=data)


def parse(data: bytes) -> dict[int, tuple[int, bytes]]:
    available = struct.unpack_from(">I", data)[0]
    assert available == len(data) - 4
    out, pos = {}, 4
    while pos < len(data):
        ident, flags, length = struct.unpack_from(">HBH", data, pos)
        out[ident] = (flags, data[pos + 5 : pos + 5 + length])
        pos += 5 + length
    return out


def test_device_and_medium_attributes() -> None:
    d, m = loaded(capacity=LTO8_NATIVE_CAPACITY)
    ok(run(d, 0x0A, 0, 0, 0x10, 0, 0, data=bytes(4096)))
    attrs = parse(ok(read_attr(d)))
    assert all(flags & 0x80 for ident, (flags, _) in attrs.items() if ident < 0x0800)
    remaining = int.from_bytes(attrs[0x0000][1], "big")
    assert remaining == (LTO8_NATIVE_CAPACITY - 4096) // MIB
    assert int.from_bytes(attrs[0x0001][1], "big") == LTO8_NATIVE_CAPACITY // MIB
    assert int.from_bytes(attrs[0x0003][1], "big") == 1  # this load
    assert attrs[0x0005][1] == b"LTO-CVE " and attrs[0x0006][1] == b"\x5e"
    assert attrs[0x020A][1] == b"THUR    " + b"TD00000001".ljust(32)
    assert attrs[0x0400] == (0x81, b"THUR    ")
    assert attrs[0x0401] == (0x81, b"TST001L8".ljust(32))
    assert attrs[0x0405][1] == b"\x5e" and attrs[0x0408][1] == b"\x00"
    assert int.from_bytes(attrs[0x0403][1], "big") == 127


def test_host_attributes_round_trip_like_ltfs() -> None:
    d, m = loaded()
    resp = write_attr(d, [(0x0800, 0x01, b"THUR    "), (0x0806, 0x01, b"TST001L8".ljust(32)),
                          (0x080C, 0x00, bytes(range(70)))], ltfs_length=True)
    ok(resp)
    assert m.host_attributes()[0x0806] == b"TST001L8".ljust(32)
    # LTFS: ATTRIBUTE VALUES from the one it wants, allocation = its size + 4.
    one = ok(read_attr(d, 0, 0x0806, alloc=4 + 5 + 32))
    assert one[4:9] == bytes([0x08, 0x06, 0x01, 0x00, 32]) and one[9:] == b"TST001L8".ljust(32)
    assert struct.unpack_from(">I", one)[0] > len(one) - 4  # available data is not truncated
    attrs = parse(ok(read_attr(d, 0, 0x0800)))
    assert attrs[0x0800] == (0x01, b"THUR    ") and attrs[0x080C][0] == 0x00
    assert min(attrs) == 0x0800
    # An attribute that is not set answers INVALID FIELD IN CDB (LTFS: "not present").
    expect(read_attr(d, 0, 0x0803), 0x5, 0x24, 0x00, field=(8, 7))
    # Length 0 deletes.
    ok(write_attr(d, [(0x0800, 0x01, b"")]))
    assert 0x0800 not in m.host_attributes()


def test_write_attribute_is_all_or_nothing() -> None:
    d, m = loaded()
    resp = write_attr(d, [(0x0800, 0x01, b"VENDOR  "), (0x0000, 0x00, bytes(8))])
    assert code(resp) == Sense.INVALID_FIELD_IN_PARAM_LIST
    assert bytes(resp.sense)[15:18] == bytes([0x8F, 0, 4 + 13])  # the 0000h attribute
    assert m.host_attributes() == {}
    resp = write_attr(d, [(0x0800, 0x01, b"SHORT")])  # 0800h is 8 bytes
    assert code(resp) == Sense.INVALID_FIELD_IN_PARAM_LIST
    resp = write_attr(d, [(0x0800, 0x02, b"VENDOR  ")])  # 0800h is ASCII, not text
    assert code(resp) == Sense.INVALID_FIELD_IN_PARAM_LIST
    resp = write_attr(d, [(0x1400, 0x00, b"x")])  # vendor-unique host range: unsupported
    assert code(resp) == Sense.INVALID_FIELD_IN_PARAM_LIST
    # Declared longer than sent: a truncated attribute.
    data = struct.pack(">I", 20) + struct.pack(">HBH", 0x0900, 0, 50) + b"x" * 11
    cdb = [0x8D, 0, 0, 0, 0, 0, 0, 0, 0, 0, *len(data).to_bytes(4, "big"), 0, 0]
    assert code(run(d, *cdb, data=data)) == Sense.PARAMETER_LIST_LENGTH_ERROR
    assert code(run(d, *cdb, data=data[:10])) == Sense.PARAMETER_LIST_LENGTH_ERROR
    # MAM space is finite.
    big = [(0x0900 + i, 0x00, bytes(1000)) for i in range(17)]
    expect(write_attr(d, big), 0x5, 0x55, 0x06)
    assert m.host_attributes() == {}


def test_service_actions_partitions_and_allocation() -> None:
    d, m = loaded(capacity=LTO8_NATIVE_CAPACITY)
    ltfs_format(d)
    ok(write_attr(d, [(0x0806, 0x01, b"TST001L8".ljust(32))]))
    listed = ok(read_attr(d, 0x01))
    ids = [struct.unpack_from(">H", listed, i)[0] for i in range(4, len(listed), 2)]
    assert 0x0000 in ids and 0x0806 in ids and ids == sorted(ids)
    assert ok(read_attr(d, 0x02)) == bytes([0, 2, 0, 1])  # one logical volume
    assert ok(read_attr(d, 0x03)) == bytes([0, 2, 0, 2])  # two partitions
    supported = ok(read_attr(d, 0x05))
    sids = {struct.unpack_from(">H", supported, i)[0] for i in range(4, len(supported), 2)}
    assert {0x0000, 0x0001, 0x0401, 0x0800, 0x0806, 0x080C} <= sids
    p1 = parse(ok(read_attr(d, 0, 0x0001, partition=1)))
    assert int.from_bytes(p1[0x0001][1], "big") == 10**9 // MIB
    assert code(read_attr(d, 0, 0, partition=2)) == Sense.INVALID_FIELD_IN_CDB
    assert code(read_attr(d, 0, 0, volume=1)) == Sense.INVALID_FIELD_IN_CDB
    assert code(read_attr(d, 0x04)) == Sense.INVALID_FIELD_IN_CDB
    short = ok(read_attr(d, alloc=10))
    assert len(short) == 10 and struct.unpack_from(">I", short)[0] > 6


def test_mam_needs_a_cartridge_but_not_a_data_cartridge() -> None:
    d = drive()
    expect(read_attr(d), 0x2, 0x3A, 0x00)
    d.load(FakeMedium("CLN001L1"))
    run(d, 0, 0, 0, 0, 0, 0)
    attrs = parse(ok(read_attr(d)))
    assert attrs[0x0408][1] == b"\x01" and int.from_bytes(attrs[0x0409][1], "big") == 50
    expect(write_attr(d, [(0x0800, 0x01, b"THUR    ")]), 0x2, 0x30, 0x03)

"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS between in-memory volumes."""

from __future__ import annotations

import struct

from handlers.scsi import FieldPointer, ThinDisk, parse_sense, thin_disk_identity
from tests.unit.test_scsi_sbc import BS, cdb10, pattern, run, sense_of
from tests.unit.test_scsi_ssc import expect, ok
from tests.unit.volume_memory import MemoryVolume
from thur.volume.protocol import Backpressure, Volume

HOLD, DISCARD, NO_LIST_ID = 0b00, 0b10, 0b11


def cscd(designator: bytes, *, kind: int = 0xE4, block_size: int = BS,
         peripheral: int = 0, lu_id_type: int = 0, association: int = 0) -> bytes:
    desc = bytearray(32)
    desc[0] = kind
    desc[1] = (lu_id_type << 6) | peripheral
    desc[4] = 0x01  # binary
    desc[5] = (association << 4) | 0x03  # NAA
    desc[7] = len(designator)
    desc[8 : 8 + len(designator)] = designator
    desc[29:32] = block_size.to_bytes(3, "big")
    return bytes(desc)


def segment(src: int, dst: int, blocks: int, src_lba: int, dst_lba: int,
            kind: int = 0x02) -> bytes:
    return struct.pack(">BBHHHxxHQQ", kind, 0, 0x18, src, dst, blocks, src_lba, dst_lba)


def params(targets: list[bytes], segments: list[bytes], *, list_id: int = 1,
           usage: int = DISCARD, inline: int = 0) -> bytes:
    t, s = b"".join(targets), b"".join(segments)
    return struct.pack(">BBH4xII", list_id, usage << 3, len(t), len(s), inline) + t + s


def xcopy_cdb(length: int) -> bytes:
    return struct.pack(">BB8xIBB", 0x83, 0x00, length, 0, 0)


def rcr_cdb(sa: int, list_id: int = 0, alloc: int = 1024) -> bytes:
    return struct.pack(">BBB7xIBB", 0x84, sa, list_id, alloc, 0, 0)


def pair() -> tuple[ThinDisk, MemoryVolume, MemoryVolume, bytes, bytes]:
    """Two volumes of one daemon; disk A knows B through the resolver."""
    a, b = MemoryVolume("a", 1024, serial="SERIAL-A"), MemoryVolume("b", 2048, serial="SERIAL-B")
    naa_a, naa_b = thin_disk_identity(a.serial).naa(), thin_disk_identity(b.serial).naa()
    known: dict[bytes, Volume] = {naa_b: b}
    d = ThinDisk(a, resolver=known.get)
    d.execute(bytes([0x03, 0, 0, 0, 18, 0]), None)
    return d, a, b, naa_a, naa_b


def xcopy(d: ThinDisk, data: bytes):
    return run(d, xcopy_cdb(len(data)), data)


def test_copy_within_one_volume() -> None:
    d, a, _, naa_a, _ = pair()
    data = pattern(100)
    ok(run(d, cdb10(0x2A, 0, 100), data))
    ok(xcopy(d, params([cscd(naa_a)], [segment(0, 0, 100, 0, 900)])))
    assert a.read(900, 100) == data
    assert a.copies == [("a", 0, 900, 100)]


def test_copy_between_two_volumes_uses_the_fast_path() -> None:
    d, a, b, naa_a, naa_b = pair()
    data = pattern(64, seed=5)
    ok(run(d, cdb10(0x2A, 16, 64), data))
    body = params([cscd(naa_a), cscd(naa_b)],
                  [segment(0, 1, 32, 16, 1000), segment(0, 1, 32, 48, 2000)])
    ok(xcopy(d, body))
    assert b.read(1000, 32) + b.read(2000, 32) == data
    assert b.copies == [("a", 16, 1000, 32), ("a", 48, 2000, 32)]
    # and back from B into A (the source is the remote volume)
    ok(xcopy(d, params([cscd(naa_b), cscd(naa_a)], [segment(0, 1, 32, 1000, 500)])))
    assert a.read(500, 32) == data[: 32 * BS]


def test_empty_parameter_list_is_a_no_op() -> None:
    d, *_ = pair()
    ok(run(d, xcopy_cdb(0)))


def test_parameter_list_length_errors() -> None:
    d, _, _, naa_a, _ = pair()
    body = params([cscd(naa_a)], [segment(0, 0, 8, 0, 100)])
    expect(xcopy(d, body[: 16 + 31]), 5, 0x1A, 0)  # truncates the CSCD descriptor
    expect(xcopy(d, body[:-1]), 5, 0x1A, 0)  # truncates the segment descriptor
    expect(xcopy(d, body[:10]), 5, 0x1A, 0)  # shorter than the header
    expect(run(d, xcopy_cdb(len(body)), body[:-4]), 5, 0x1A, 0)  # data-out too short
    big = params([cscd(naa_a)] * 9, [segment(0, 0, 1, 0, 1)] * 64)
    expect(xcopy(d, big), 5, 0x1A, 0)  # above MAXIMUM DESCRIPTOR LIST LENGTH


def test_descriptor_counts_and_types() -> None:
    d, _, _, naa_a, _ = pair()
    expect(xcopy(d, params([cscd(naa_a)] * 9, [segment(0, 0, 1, 0, 1)])), 5, 0x26, 0x06)
    expect(xcopy(d, params([cscd(naa_a)], [segment(0, 0, 1, 0, 1)] * 65)), 5, 0x26, 0x08)
    expect(xcopy(d, params([cscd(naa_a, kind=0xE0)], [segment(0, 0, 1, 0, 1)])), 5, 0x26, 0x07)
    expect(xcopy(d, params([cscd(naa_a)], [segment(0, 0, 1, 0, 1, kind=0x03)])), 5, 0x26, 0x09)
    bad_usage = xcopy(d, params([cscd(naa_a)], [segment(0, 0, 1, 0, 1)], usage=0b01))
    assert sense_of(bad_usage) == (5, 0x26, 0)
    assert parse_sense(bytes(bad_usage.sense)).field == FieldPointer(1, 4, in_cdb=False)
    # LIST ID USAGE 11b needs list id 0
    no_id = xcopy(d, params([cscd(naa_a)], [segment(0, 0, 1, 0, 1)], usage=NO_LIST_ID))
    assert parse_sense(bytes(no_id.sense)).field == FieldPointer(0, 7, in_cdb=False)
    ok(xcopy(d, params([cscd(naa_a)], [segment(0, 0, 1, 0, 1)], usage=NO_LIST_ID, list_id=0)))


def test_segment_validation_is_copy_aborted_and_copies_nothing() -> None:
    d, a, b, naa_a, naa_b = pair()
    ok(run(d, cdb10(0x2A, 0, 8), pattern(8)))
    # a CSCD index that is not in the list
    expect(xcopy(d, params([cscd(naa_a)], [segment(0, 1, 8, 0, 100)])), 0xA, 0x08, 0x04)
    # beyond the end of the destination; the first (good) segment is not copied either
    body = params([cscd(naa_a)], [segment(0, 0, 8, 0, 100), segment(0, 0, 8, 0, 1020)])
    expect(xcopy(d, body), 0xA, 0x0D, 0x02)
    assert a.copies == []
    # a designator nobody knows
    expect(xcopy(d, params([cscd(naa_a), cscd(b"\x60" + bytes(15))],
                           [segment(0, 1, 1, 0, 0)])), 0xA, 0x0D, 0x02)
    # a block size that does not match the volume, a non-disk CSCD
    expect(xcopy(d, params([cscd(naa_a, block_size=512)], [segment(0, 0, 1, 0, 1)])),
           0xA, 0x0D, 0x03)
    expect(xcopy(d, params([cscd(naa_a, peripheral=1)], [segment(0, 0, 1, 0, 1)])),
           0xA, 0x0D, 0x03)
    assert b.copies == []


def test_lu_id_type_is_ignored() -> None:
    d, a, _, naa_a, _ = pair()
    ok(xcopy(d, params([cscd(naa_a, lu_id_type=3)], [segment(0, 0, 4, 0, 10)])))
    assert a.copies == [("a", 0, 10, 4)]


def test_write_protected_destination() -> None:
    a = MemoryVolume("a", 64, write_protected=True)
    d = ThinDisk(a)
    d.execute(bytes([0x03, 0, 0, 0, 18, 0]), None)
    naa = thin_disk_identity(a.serial).naa()
    expect(xcopy(d, params([cscd(naa)], [segment(0, 0, 1, 0, 1)])), 7, 0x27, 0)


def test_volume_errors_during_the_copy_use_the_one_mapping() -> None:
    d, _, b, naa_a, naa_b = pair()
    b.fail_next = Backpressure("cache full")
    expect(xcopy(d, params([cscd(naa_a), cscd(naa_b)], [segment(0, 1, 1, 0, 0)], usage=HOLD,
                           list_id=9)), 2, 0x04, 0x07)
    status = ok(run(d, rcr_cdb(0x00, 9)))
    assert status == struct.pack(">IBHBI", 8, 0x02, 0, 0, 0)  # completed with errors


def test_receive_copy_results_operating_parameters_byte_exact() -> None:
    d, *_ = pair()
    data = ok(run(d, rcr_cdb(0x03)))
    want = struct.pack(">IBxxxHHIIIII2xHBBBB3xB", 42, 0x01, 8, 64, 2048, 0xFFFF * BS,
                       0, 0, 0, 1, 1, 12, 12, 12, 2) + bytes([0x02, 0xE4])
    assert data == want
    assert ok(run(d, rcr_cdb(0x03, alloc=10))) == want[:10]


def test_receive_copy_status_held_once_per_list_id() -> None:
    d, _, _, naa_a, _ = pair()
    expect(run(d, rcr_cdb(0x00, 1)), 5, 0x24, 0, field=(2, 7))
    ok(xcopy(d, params([cscd(naa_a)], [segment(0, 0, 2048 // 8, 0, 512)], usage=HOLD)))
    data = ok(run(d, rcr_cdb(0x00, 1)))
    assert data == struct.pack(">IBHBI", 8, 0x01, 1, 0, 256 * BS)
    expect(run(d, rcr_cdb(0x00, 1)), 5, 0x24, 0, field=(2, 7))  # released once read
    ok(xcopy(d, params([cscd(naa_a)], [segment(0, 0, 1, 0, 1)], usage=DISCARD, list_id=2)))
    expect(run(d, rcr_cdb(0x00, 2)), 5, 0x24, 0, field=(2, 7))  # not held


def test_unknown_service_actions() -> None:
    d, *_ = pair()
    assert sense_of(run(d, rcr_cdb(0x01))) == (5, 0x24, 0)  # RECEIVE DATA: not supported
    assert sense_of(run(d, struct.pack(">BB8xIBB", 0x83, 0x01, 0, 0, 0))) == (5, 0x24, 0)

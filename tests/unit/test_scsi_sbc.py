"""The thin disk: identity, VPD pages, READ CAPACITY, mode pages, RSOC, unit attentions.

Also the shared helpers (CDB builders) of the test_scsi_sbc_* modules.
"""

from __future__ import annotations

import struct

import pytest

from handlers.scsi import (
    DiskLimits,
    FieldPointer,
    Response,
    Sense,
    ThinDisk,
    parse_sense,
    thin_disk_identity,
)
from handlers.scsi.spc import command_table
from tests.unit.test_scsi_ssc import expect, ok
from tests.unit.volume_memory import MemoryVolume

BS = 4096


def disk(num_blocks: int = 1024, *, limits: DiskLimits | None = None,
         **kwargs: object) -> tuple[ThinDisk, MemoryVolume]:
    """A disk over a fresh in-memory volume, the POWER ON unit attention consumed."""
    vol = MemoryVolume("vol0", num_blocks, **kwargs)  # type: ignore[arg-type]
    d = ThinDisk(vol, limits=limits)
    d.execute(bytes([0x03, 0, 0, 0, 18, 0]), None)
    return d, vol


def run(d: ThinDisk, cdb: bytes, data: bytes | None = None) -> Response:
    return d.execute(cdb, memoryview(data) if data is not None else None)


def cdb6(op: int, lba: int, blocks: int) -> bytes:
    return bytes([op]) + (lba & 0x1FFFFF).to_bytes(3, "big") + bytes([blocks & 0xFF, 0])


def cdb10(op: int, lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", op, flags, lba & 0xFFFFFFFF, 0, blocks, 0)


def cdb12(op: int, lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIIBB", op, flags, lba & 0xFFFFFFFF, blocks, 0, 0)


def cdb16(op: int, lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, flags, lba & (2**64 - 1), blocks, 0, 0)


def sense_of(resp: Response) -> tuple[int, int, int]:
    code = parse_sense(bytes(resp.sense)).code
    return int(code.key), code.asc, code.ascq


def pattern(blocks: int, seed: int = 1) -> bytes:
    return bytes((seed + i) % 251 for i in range(blocks * BS))


# ---- identity ---------------------------------------------------------------------------

def test_standard_inquiry_is_a_direct_access_disk_with_3pc() -> None:
    d, _ = disk()
    data = ok(run(d, bytes([0x12, 0, 0, 0, 96, 0])))
    assert data[0] == 0x00 and data[1] == 0x00  # type 00h, not removable
    assert data[5] == 0x08  # 3PC: EXTENDED COPY
    assert data[8:16] == b"THUR    " and data[16:32] == b"VSA".ljust(16)
    assert 0x04C0 in struct.unpack_from(">8H", data, 58)  # SBC-3 version descriptor


def test_identity_comes_from_the_volume_serial() -> None:
    d, vol = disk()
    assert ok(run(d, bytes([0x12, 1, 0x80, 0, 255, 0])))[4:] == vol.serial.encode()
    vpd83 = ok(run(d, bytes([0x12, 1, 0x83, 0, 255, 0])))
    assert vpd83[4:8] == bytes([0x01, 0x03, 0x00, 0x10])
    assert vpd83[8:24] == thin_disk_identity(vol.serial).naa()


def test_supported_vpd_pages() -> None:
    d, _ = disk()
    assert ok(run(d, bytes([0x12, 1, 0, 0, 255, 0]))) == bytes(
        [0, 0, 0, 7, 0x00, 0x80, 0x83, 0x8F, 0xB0, 0xB1, 0xB2]
    )


def test_vpd_block_limits_byte_exact() -> None:
    d, _ = disk()
    data = ok(run(d, bytes([0x12, 1, 0xB0, 0, 255, 0])))
    want = bytearray(64)
    want[1], want[3] = 0xB0, 0x3C
    want[5] = 16  # max COMPARE AND WRITE length
    want[6:8] = (16).to_bytes(2, "big")  # optimal granularity: one 64 KiB page
    want[8:12] = (2048).to_bytes(4, "big")  # 8 MiB max transfer
    want[12:16] = (256).to_bytes(4, "big")  # 1 MiB optimal transfer
    want[20:24] = (262144).to_bytes(4, "big")  # max unmap LBA count (1 GiB)
    want[24:28] = (256).to_bytes(4, "big")  # max unmap descriptors
    want[28:32] = (16).to_bytes(4, "big")  # optimal unmap granularity = page size
    want[32:36] = (0x80000000).to_bytes(4, "big")  # UGAVALID, alignment 0
    want[36:44] = (262144).to_bytes(8, "big")  # max WRITE SAME length
    assert data == bytes(want)


def test_vpd_block_characteristics_and_provisioning() -> None:
    d, _ = disk()
    b1 = ok(run(d, bytes([0x12, 1, 0xB1, 0, 255, 0])))
    assert b1[:8] == bytes([0, 0xB1, 0, 0x3C, 0x00, 0x01, 0, 0]) and len(b1) == 64
    b2 = ok(run(d, bytes([0x12, 1, 0xB2, 0, 255, 0])))
    assert b2 == bytes([0, 0xB2, 0, 4, 0x00, 0xE4, 0x02, 0x00])  # LBPU LBPWS LBPWS10 LBPRZ


def test_vpd_allocation_length_truncates() -> None:
    d, _ = disk()
    assert ok(run(d, bytes([0x12, 1, 0xB0, 0, 10, 0]))) == bytes(
        [0, 0xB0, 0, 0x3C, 0, 16, 0, 16, 0, 0]
    )


def test_third_party_copy_vpd_lists_lid1_commands() -> None:
    d, _ = disk()
    data = ok(run(d, bytes([0x12, 1, 0x8F, 1, 0, 0])))
    assert data[:2] == bytes([0, 0x8F]) and struct.unpack_from(">H", data, 2)[0] == len(data) - 4
    descriptors, pos = {}, 4
    while pos < len(data):
        kind, length = struct.unpack_from(">HH", data, pos)
        assert length % 4 == 0
        descriptors[kind] = data[pos + 4 : pos + 4 + length]
        pos += 4 + length
    assert set(descriptors) == {0x0001, 0x0004, 0x0005, 0x0080}
    assert descriptors[0x0001][:8] == bytes([7, 0x83, 1, 0x00, 0x84, 2, 0x00, 0x03])
    assert descriptors[0x0005][:3] == bytes([2, 0x02, 0xE4])
    assert struct.unpack_from(">HH", descriptors[0x0004], 2) == (8, 64)


# ---- READ CAPACITY ------------------------------------------------------------------------

def test_read_capacity_10_byte_exact() -> None:
    d, _ = disk(1024)
    assert ok(run(d, bytes(10)[:0] + bytes([0x25] + [0] * 9))) == struct.pack(">II", 1023, BS)


def test_read_capacity_10_saturates_for_huge_volumes() -> None:
    d, _ = disk(1 << 33)  # 32 TiB of 4 KiB blocks: only a thin volume can afford it
    assert ok(run(d, bytes([0x25] + [0] * 9))) == struct.pack(">II", 0xFFFFFFFF, BS)
    data = ok(run(d, bytes([0x9E, 0x10] + [0] * 8 + [0, 0, 0, 32, 0, 0])))
    assert struct.unpack_from(">Q", data)[0] == (1 << 33) - 1


def test_read_capacity_10_lba_without_pmi_is_invalid() -> None:
    d, _ = disk()
    expect(run(d, bytes([0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0])), 5, 0x24, 0, field=(2, 7))


def test_read_capacity_16_byte_exact() -> None:
    d, _ = disk(1024)
    data = ok(run(d, bytes([0x9E, 0x10] + [0] * 8 + [0, 0, 0, 32, 0, 0])))
    want = struct.pack(">QIBBH", 1023, BS, 0, 0, 0xC000) + bytes(16)
    assert data == want


@pytest.mark.parametrize("alloc", range(0, 33, 3))
def test_read_capacity_16_honours_allocation_length(alloc: int) -> None:
    d, _ = disk(1024)
    data = ok(run(d, bytes([0x9E, 0x10] + [0] * 8 + [0, 0, 0, alloc, 0, 0])))
    assert data == (struct.pack(">QIBBH", 1023, BS, 0, 0, 0xC000) + bytes(16))[:alloc]


def test_512_byte_blocks() -> None:
    d, _ = disk(4096, block_size=512)
    assert ok(run(d, bytes([0x25] + [0] * 9))) == struct.pack(">II", 4095, 512)


# ---- unit attentions ----------------------------------------------------------------------

def test_power_on_then_capacity_changed_after_resize() -> None:
    vol = MemoryVolume("v", 1024)
    d = ThinDisk(vol)
    expect(run(d, bytes(6)), 6, 0x29, 0)
    vol.resize(2048)
    d.capacity_changed()
    # INQUIRY never consumes a unit attention
    assert ok(run(d, bytes([0x12, 0, 0, 0, 36, 0])))[0] == 0
    expect(run(d, cdb10(0x28, 0, 1)), 6, 0x2A, 0x09)
    assert ok(run(d, bytes([0x25] + [0] * 9))) == struct.pack(">II", 2047, BS)
    assert Sense.CAPACITY_CHANGED not in d.pending_unit_attentions()


# ---- mode pages ---------------------------------------------------------------------------

def test_mode_sense_caching_page_byte_exact() -> None:
    d, _ = disk(1024)
    data = ok(run(d, bytes([0x1A, 0x08, 0x08, 0, 255, 0])))  # DBD, page 08h
    assert data[:4] == bytes([3 + 20, 0, 0x10, 0])  # DPOFUA, no block descriptors
    assert data[4:] == bytes([0x08, 0x12, 0x04]) + bytes(17)


def test_mode_sense_block_descriptor_and_write_protect_bit() -> None:
    d, _ = disk(1024, write_protected=True)
    data = ok(run(d, bytes([0x1A, 0, 0x0A, 0, 255, 0])))
    assert data[2] == 0x80 | 0x10 and data[3] == 8
    assert data[4:12] == bytes([0, 0, 0x04, 0x00, 0, 0, 0x10, 0x00])  # 1024 blocks of 4 KiB
    ten = ok(run(d, bytes([0x5A, 0x10, 0x0A, 0, 0, 0, 0, 0, 255, 0])))  # LLBAA
    assert ten[4] & 0x01 and ten[6:8] == b"\x00\x10"
    assert ten[8:24] == struct.pack(">Q4xI", 1024, BS)


def test_mode_select_wce_off_makes_every_write_fua() -> None:
    d, vol = disk()
    page = bytearray(ok(run(d, bytes([0x1A, 0x08, 0x08, 0, 255, 0])))[4:])
    page[2] &= ~0x04
    ok(run(d, bytes([0x15, 0x10, 0, 0, 4 + len(page), 0]), bytes(4) + bytes(page)))
    assert not d.write_cache_enabled
    ok(run(d, cdb10(0x2A, 0, 1), pattern(1)))
    assert vol.fua_writes == 1
    page[2] |= 0x04
    ok(run(d, bytes([0x15, 0x10, 0, 0, 4 + len(page), 0]), bytes(4) + bytes(page)))
    ok(run(d, cdb10(0x2A, 0, 1), pattern(1)))
    assert vol.fua_writes == 1  # WCE=1: not FUA
    ok(run(d, cdb10(0x2A, 0, 1, flags=0x08), pattern(1)))
    assert vol.fua_writes == 2  # the FUA bit


def test_mode_select_accepts_the_block_descriptor_it_was_given() -> None:
    """sdparm --set WCE echoes MODE SENSE (with its block descriptor) back."""
    d, _ = disk()
    sensed = bytearray(ok(run(d, bytes([0x1A, 0, 0x08, 0, 255, 0]))))
    sensed[0] = 0  # mode data length is reserved in MODE SELECT
    sensed[2] = 0
    sensed[12 + 2] &= ~0x04
    ok(run(d, bytes([0x15, 0x10, 0, 0, len(sensed), 0]), bytes(sensed)))
    assert not d.write_cache_enabled
    bad = bytearray(sensed)
    bad[4 + 5 : 4 + 8] = (512).to_bytes(3, "big")
    resp = run(d, bytes([0x15, 0x10, 0, 0, len(bad), 0]), bytes(bad))
    assert sense_of(resp) == (5, 0x26, 0)
    assert parse_sense(bytes(resp.sense)).field == FieldPointer(9, 7, in_cdb=False)


def test_software_write_protect_from_the_control_page() -> None:
    d, vol = disk()
    page = bytearray(ok(run(d, bytes([0x1A, 0x08, 0x0A, 0, 255, 0])))[4:])
    page[4] |= 0x08  # SWP
    ok(run(d, bytes([0x15, 0x10, 0, 0, 4 + len(page), 0]), bytes(4) + bytes(page)))
    expect(run(d, cdb10(0x2A, 0, 1), pattern(1)), 7, 0x27, 0)
    assert ok(run(d, bytes([0x1A, 0x08, 0x0A, 0, 255, 0])))[2] & 0x80
    ok(run(d, cdb10(0x28, 0, 1)))  # reads still work
    assert vol.writes == 0


# ---- START STOP UNIT, RSOC ------------------------------------------------------------------

def test_start_stop_unit() -> None:
    d, vol = disk()
    ok(run(d, bytes([0x1B, 0, 0, 0, 0x00, 0])))  # stop: flushes
    assert vol.flushes == 1
    ok(run(d, bytes([0x1B, 0, 0, 0, 0x04, 0])))  # stop with NO_FLUSH
    assert vol.flushes == 1
    ok(run(d, bytes([0x1B, 1, 0, 0, 0x01, 0])))  # start, IMMED
    ok(run(d, bytes(6)))  # still ready
    expect(run(d, bytes([0x1B, 0, 0, 0, 0x50, 0])), 5, 0x24, 0, field=(4, 7))


def test_rsoc_lists_exactly_the_dispatched_commands() -> None:
    d, _ = disk()
    data = ok(run(d, bytes([0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0])))
    listed = set()
    for pos in range(4, 4 + struct.unpack_from(">I", data)[0], 8):
        op, sa, flags, length = struct.unpack_from(">BxHxBH", data, pos)
        listed.add((op, sa if flags & 1 else None, length))
    table = {(c.opcode, c.service_action, c.cdb_length) for c in command_table(ThinDisk)}
    assert listed == table
    ops = {op for op, _, _ in listed}
    assert {0x28, 0x2A, 0x41, 0x42, 0x89, 0x83, 0x84, 0x9E, 0x93, 0x35, 0x91} <= ops
    assert 0x04 not in ops  # FORMAT UNIT is not implemented


@pytest.mark.parametrize("opcode", [0x28, 0x89, 0x2A, 0x88])
def test_rsoc_one_command_shows_dpo_fua_usage(opcode: int) -> None:
    d, _ = disk()
    data = ok(run(d, bytes([0xA3, 0x0C, 0x01, opcode, 0, 0, 0, 0, 1, 0, 0, 0])))
    assert data[1] & 0x07 == 0x03 and data[4] == opcode and data[5] & 0x18 == 0x18


def test_format_unit_is_an_invalid_opcode() -> None:
    d, _ = disk()
    expect(run(d, bytes([0x04, 0, 0, 0, 0, 0])), 5, 0x20, 0)


# ---- READ DEFECT DATA --------------------------------------------------------------------

def test_read_defect_data_10_is_an_empty_list_byte_exact() -> None:
    # libiscsi ReadDefectData10.Simple: a thin volume has no defects, in any format.
    d, _ = disk()
    cdb = bytes([0x37, 0, 0x18 | 0x05, 0, 0, 0, 0, 0, 32, 0])  # PLIST + GLIST, physical sector
    assert ok(run(d, cdb)) == bytes([0, 0x1D, 0, 0])
    assert ok(run(d, bytes([0x37, 0, 0x08, 0, 0, 0, 0, 0, 2, 0]))) == bytes([0, 0x08])
    assert ok(run(d, bytes([0x37, 0, 0, 0, 0, 0, 0, 0, 0, 0]))) == b""
    expect(run(d, bytes([0x37, 0, 0x07, 0, 0, 0, 0, 0, 32, 0])), 5, 0x24, 0, field=(2, 2))


def test_read_defect_data_12_is_an_empty_list_byte_exact() -> None:
    d, _ = disk()
    cdb = bytes([0xB7, 0x10 | 0x03, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0])  # PLIST, long block
    assert ok(run(d, cdb)) == bytes([0, 0x13, 0, 0, 0, 0, 0, 0])
    assert ok(run(d, bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0]))) == bytes(4)
    expect(run(d, bytes([0xB7, 0x07, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0])), 5, 0x24, 0,
           field=(1, 2))
    # Listed by RSOC, so libiscsi's tests find it.
    data = ok(run(d, bytes([0xA3, 0x0C, 0x01, 0xB7, 0, 0, 0, 0, 1, 0, 0, 0])))
    assert data[1] & 0x07 == 0x03 and len(data) == 4 + 12

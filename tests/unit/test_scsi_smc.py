"""The medium changer: what ch and `mtx status` send, element status round trips, moves."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from handlers.scsi import (
    CHECK_CONDITION,
    GOOD,
    ElementLayout,
    ElementRange,
    ElementType,
    InMemoryChanger,
    MediumChanger,
    Sense,
    TapeDrive,
    changer_identity,
    parse_sense,
    tape_drive_identity,
)
from tests.unit.test_scsi_ssc import FakeMedium


@dataclass
class Parsed:
    """One element descriptor decoded by the test's own READ ELEMENT STATUS parser."""

    type: int
    address: int
    full: bool
    flags: int
    source: int | None
    barcode: str | None
    device_id: bytes | None


def parse_res(data: bytes) -> tuple[int, int, list[Parsed]]:
    first, count, _, total = struct.unpack_from(">HHB3s", data)
    total_len = int.from_bytes(total, "big")
    assert len(data) == 8 + total_len
    out: list[Parsed] = []
    pos = 8
    while pos < len(data):
        etype, vol, dlen, _, avail = struct.unpack_from(">BBHB3s", data, pos)
        avail_len = int.from_bytes(avail, "big")
        pos += 8
        assert avail_len % dlen == 0
        for off in range(pos, pos + avail_len, dlen):
            d = data[off : off + dlen]
            addr, flags = struct.unpack_from(">HB", d)
            svalid, source = d[9] & 0x80, struct.unpack_from(">H", d, 10)[0]
            tail = 12
            barcode = None
            if vol & 0x80:
                barcode = d[12:44].rstrip(b" \x00").decode() or None
                tail += 36
            device_id = None
            if dlen > tail:
                code_set, id_type, _, id_len = struct.unpack_from(">BBBB", d, tail)
                assert code_set == 2 and id_type in (0, 1)
                device_id = d[tail + 4 : tail + 4 + id_len]
            out.append(Parsed(etype, addr, bool(flags & 1), flags,
                              source if svalid else None, barcode, device_id))
        pos += avail_len
    assert count == len(out)
    return first, count, out


def library(with_media: bool = False):
    drives = [TapeDrive(tape_drive_identity(f"TD{i:08d}")) for i in range(2)]
    model = InMemoryChanger(slots=6, mail_slots=2, drives=drives,
                            media=(lambda bc: FakeMedium(barcode=bc)) if with_media else None)
    changer = MediumChanger(changer_identity("TL00000001"), model)
    changer.execute(bytes([0x03, 0, 0, 0, 18, 0]), None)  # consume POWER ON
    for d in drives:
        d.execute(bytes([0x03, 0, 0, 0, 18, 0]), None)
    return changer, model, drives


def res(changer: MediumChanger, etype: int = 0, start: int = 0, count: int = 0xFFFF,
        voltag: bool = True, dvcid: bool = False, alloc: int = 0xFFFFFF):
    cdb = bytes([0xB8, (0x10 if voltag else 0) | etype]) + struct.pack(">HH", start, count)
    cdb += bytes([0x01 if dvcid else 0]) + alloc.to_bytes(3, "big") + bytes(2)
    return changer.execute(cdb, None)


def sense_code(resp):
    assert resp.status == CHECK_CONDITION
    return parse_sense(bytes(resp.sense)).code


def move(changer: MediumChanger, src: int, dst: int):
    return changer.execute(bytes([0xA5, 0, 0, 0]) + struct.pack(">HH", src, dst) + bytes(4), None)


def test_inquiry_identifies_a_medium_changer() -> None:
    changer, _, _ = library()
    std = bytes(changer.execute(bytes([0x12, 0, 0, 0, 96, 0]), None).data)
    assert std[0] == 0x08 and std[8:24] == b"THUR    VTL     "
    vpd = bytes(changer.execute(bytes([0x12, 1, 0x83, 0, 255, 0]), None).data)
    assert vpd[:2] == bytes([0x08, 0x83]) and vpd[8] >> 4 == 6


def test_element_address_assignment_page_as_ch_and_mtx_read_it() -> None:
    changer, _, _ = library()
    for b1 in (0x00, 0x08):  # ch tries without DBD, mtx with it
        data = bytes(changer.execute(bytes([0x1A, b1, 0x1D, 0, 136, 0]), None).data)
        p = data[4 + data[3] :]
        assert p[:2] == bytes([0x1D, 0x12])
        assert struct.unpack_from(">8H", p, 2) == (0, 1, 0x400, 6, 0x200, 2, 0x100, 2)
    geometry = bytes(changer.execute(bytes([0x1A, 0x08, 0x1E, 0, 255, 0]), None).data)
    assert geometry[4:] == bytes([0x1E, 0x02, 0, 0])
    caps = bytes(changer.execute(bytes([0x1A, 0x08, 0x1F, 0, 255, 0]), None).data)[4:]
    assert caps[:3] == bytes([0x1F, 0x12, 0x0E]) and caps[5:8] == bytes([0x0E] * 3)


def test_empty_library_status_like_mtx() -> None:
    changer, _, _ = library()
    # mtx: storage, import/export, drives, transport, each with VOLTAG.
    for etype, start, n, expect in ((2, 0x400, 6, 6), (3, 0x200, 2, 2), (4, 0x100, 2, 2),
                                    (1, 0, 1, 1)):
        resp = res(changer, etype, start, n, alloc=8 + 4 * 8 + 10 * 120)
        assert resp.status == GOOD
        first, count, elements = parse_res(bytes(resp.data))
        assert first == start and count == expect
        assert all(e.type == etype and not e.full and e.barcode is None for e in elements)
    _, _, every = parse_res(bytes(res(changer).data))
    assert [e.type for e in every] == [1, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2]
    assert [e.address for e in every] == [0, 0x100, 0x101, 0x200, 0x201, *range(0x400, 0x406)]


def test_ch_driver_probe_of_a_drive_element() -> None:
    changer, _, _ = library()
    cdb = bytes([0xB8, 0x04, 0x01, 0x00, 0, 1, 0, 0, 0, 255, 0, 0])
    data = bytes(changer.execute(cdb, None).data)
    assert struct.unpack_from(">H", data, 16)[0] == 0x100  # ch checks buffer[16..17]
    assert data[16 + 6] & 0x30 == 0  # ID/LUN not reported


def test_dvcid_matches_drive_vpd() -> None:
    changer, _, drives = library()
    _, _, dts = parse_res(bytes(res(changer, 4, dvcid=True).data))
    for element, drive in zip(dts, drives, strict=True):
        vpd = bytes(drive.execute(bytes([0x12, 1, 0x83, 0, 255, 0]), None).data)
        assert element.device_id == b"THUR    Ultrium 8-SCSI  " + drive.identity.serial.encode()
        assert element.device_id in vpd
    # Without VOLTAG the identifier follows the 12-byte descriptor directly.
    _, _, plain = parse_res(bytes(res(changer, 4, voltag=False, dvcid=True).data))
    assert plain[0].device_id == dts[0].device_id and plain[0].barcode is None


def test_allocation_length_truncation_keeps_full_counts() -> None:
    changer, _, _ = library()
    full = bytes(res(changer).data)
    for alloc in (0, 1, 8, 9, 60, len(full) - 1):
        resp = res(changer, alloc=alloc)
        assert resp.status == GOOD and bytes(resp.data) == full[:alloc]
    head = bytes(res(changer, alloc=8).data)
    assert int.from_bytes(head[5:8], "big") + 8 == len(full)  # mtx re-asks with this size
    assert struct.unpack_from(">H", head, 2)[0] == 11


def test_read_element_status_errors() -> None:
    changer, _, _ = library()
    assert sense_code(res(changer, start=0x500)) == Sense.INVALID_ELEMENT
    assert sense_code(res(changer, etype=7)) == Sense.INVALID_FIELD_IN_CDB
    resp = res(changer, start=0x300, etype=3)  # nothing at or after 300h of that type
    assert resp.status == GOOD and parse_res(bytes(resp.data))[1] == 0


def test_move_medium_round_trip_and_errors() -> None:
    changer, model, _ = library()
    model.insert(0x400, "ABC001L8")
    assert move(changer, 0x400, 0x401).status == GOOD
    _, _, slots = parse_res(bytes(res(changer, 2).data))
    assert [(e.address, e.full, e.barcode, e.source) for e in slots[:2]] == [
        (0x400, False, None, None), (0x401, True, "ABC001L8", 0x400)]
    assert sense_code(move(changer, 0x400, 0x402)) == Sense.SOURCE_EMPTY
    model.insert(0x402, "ABC002L8")
    assert sense_code(move(changer, 0x401, 0x402)) == Sense.DESTINATION_FULL
    assert sense_code(move(changer, 0x401, 0x999)) == Sense.INVALID_ELEMENT
    assert sense_code(move(changer, 0x401, 0x000)) == Sense.INVALID_ELEMENT  # transport
    resp = changer.execute(bytes([0xA5, 0, 0, 0, 4, 1, 4, 3, 0, 0, 1, 0]), None)
    assert sense_code(resp) == Sense.INVALID_FIELD_IN_CDB  # INVERT


def test_prevent_blocks_export_only() -> None:
    changer, model, _ = library()
    model.insert(0x400, "ABC001L8")
    assert changer.execute(bytes([0x1E, 0, 0, 0, 1, 0]), None).status == GOOD
    assert sense_code(move(changer, 0x400, 0x200)) == Sense.REMOVAL_PREVENTED
    assert move(changer, 0x400, 0x401).status == GOOD
    changer.execute(bytes([0x1E, 0, 0, 0, 0, 0]), None)
    assert move(changer, 0x401, 0x200).status == GOOD
    assert model.remove(0x200) == "ABC001L8"


def test_move_into_drive_loads_its_lu_and_out_unloads() -> None:
    changer, model, drives = library(with_media=True)
    model.insert(0x400, "ABC001L8")
    assert move(changer, 0x400, 0x100).status == GOOD
    drive = drives[0]
    assert drive.medium is not None and drive.medium.barcode == "ABC001L8"
    tur = drive.execute(bytes(6), None)
    assert parse_res is not None and sense_code(tur) == Sense.MEDIUM_MAY_HAVE_CHANGED
    assert drive.execute(bytes(6), None).status == GOOD
    _, _, dts = parse_res(bytes(res(changer, 4).data))
    assert dts[0].full and dts[0].barcode == "ABC001L8" and dts[0].source == 0x400
    # A drive held by PREVENT MEDIUM REMOVAL refuses to give the cartridge up.
    drive.execute(bytes([0x1E, 0, 0, 0, 1, 0]), None)
    assert sense_code(move(changer, 0x100, 0x400)) == Sense.REMOVAL_PREVENTED
    drive.execute(bytes([0x1E, 0, 0, 0, 0, 0]), None)
    assert move(changer, 0x100, 0x400).status == GOOD
    assert drive.medium is None
    assert sense_code(drive.execute(bytes(6), None)) == Sense.MEDIUM_NOT_PRESENT


def test_exchange_position_and_initialize() -> None:
    changer, model, _ = library()
    model.insert(0x400, "A")
    model.insert(0x401, "B")
    cdb = bytes([0xA6, 0, 0, 0]) + struct.pack(">HHH", 0x400, 0x401, 0x402) + bytes(2)
    assert changer.execute(cdb, None).status == GOOD
    assert model.status(0x401).barcode == "A" and model.status(0x402).barcode == "B"
    assert changer.execute(bytes([0x2B, 0, 0, 0, 4, 0, 0, 0, 0, 0]), None).status == GOOD
    assert sense_code(changer.execute(bytes([0x2B, 0, 0, 0, 9, 0, 0, 0, 0, 0]), None)) == (
        Sense.INVALID_ELEMENT)
    assert changer.execute(bytes([0x07, 0, 0, 0, 0, 0]), None).status == GOOD
    rng = bytes([0x37, 0x01, 0x04, 0x00, 0, 0, 0, 2, 0, 0])
    assert changer.execute(rng, None).status == GOOD
    assert sense_code(changer.execute(bytes([0x37, 1, 9, 0, 0, 0, 0, 1, 0, 0]), None)) == (
        Sense.INVALID_ELEMENT)


def test_tur_and_log_pages() -> None:
    changer, _, _ = library()
    assert changer.execute(bytes(6), None).status == GOOD
    data = bytes(changer.execute(bytes([0x4D, 0, 0x40, 0, 0, 0, 0, 0, 255, 0]), None).data)
    assert data[4:] == bytes([0x00, 0x2E])


def test_layout_validation() -> None:
    with pytest.raises(ValueError):
        ElementLayout(
            ElementRange(ElementType.MEDIUM_TRANSPORT, 0, 1),
            ElementRange(ElementType.STORAGE, 0x10, 10),
            ElementRange(ElementType.IMPORT_EXPORT, 0x15, 2),
            ElementRange(ElementType.DATA_TRANSFER, 0x100, 1),
        )
    big = ElementLayout.standard(drives=255, slots=60000, mail_slots=1000)
    assert big.data_transfer.first == 1 and big.storage.last <= 0xFFFF


def test_exchange_with_a_first_destination_that_is_an_end_is_refused() -> None:
    changer, model, _ = library()
    model.insert(0x400, "A")
    model.insert(0x401, "B")
    for first, second in ((0x400, 0x402), (0x401, 0x401)):
        cdb = bytes([0xA6, 0, 0, 0]) + struct.pack(">HHH", 0x400, first, second) + bytes(2)
        assert sense_code(changer.execute(cdb, None)) == Sense.INVALID_FIELD_IN_CDB
    assert model.status(0x400).barcode == "A" and model.status(0x401).barcode == "B"


def test_persistent_library_model_behind_the_changer_lu(tmp_path) -> None:
    """The same CDBs against thur.library's model: status as mtx reads it, after a move."""
    from tests.unit.test_library_changer import make_library

    lib = make_library(tmp_path)
    lib.create_cartridge("ABC001L8")
    changer = MediumChanger(changer_identity("TL00000001"), lib)
    changer.execute(bytes([0x03, 0, 0, 0, 18, 0]), None)
    assert move(changer, 0x400, 0x100).status == GOOD
    _, _, every = parse_res(bytes(res(changer, dvcid=True).data))
    assert [(e.address, e.barcode, e.source) for e in every if e.full] == [
        (0x100, "ABC001L8", 0x400)]
    assert every[1].device_id.endswith(b"TD00000000")


def test_read_attribute_reports_the_barcode_of_an_element() -> None:
    changer, model, _ = library()
    slot = model.layout.storage.first
    model.insert(slot, "ABC123L8")

    def read(sa: int, address: int, first: int = 0) -> bytes:
        cdb = struct.pack(">BBHxxxxHIxx", 0x8C, sa, address, first, 4096)
        resp = changer.execute(cdb, None)
        assert resp.status == 0, sense_code(resp)
        return bytes(resp.data)

    values = read(0x00, slot)
    assert struct.unpack_from(">I", values)[0] == len(values) - 4
    ident, flags, length = struct.unpack_from(">HBH", values, 4)
    assert (ident, flags & 0x80, length) == (0x0806, 0x80, 32)  # read-only
    assert values[9:].rstrip() == b"ABC123L8"
    assert read(0x00, model.layout.storage.first + 1) == bytes(4)  # empty slot
    assert read(0x05, 0)[4:] == b"\x08\x06"  # supported attributes
    resp = changer.execute(struct.pack(">BBHxxxxHIxx", 0x8C, 0, 0xFFFE, 0, 64), None)
    assert sense_code(resp)[0] == 0x05  # no such element

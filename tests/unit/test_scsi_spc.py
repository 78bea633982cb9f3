"""Shared SPC behaviour: sense formats, INQUIRY/VPD, UA lifecycle, MODE/LOG pages, RSOC."""

from __future__ import annotations

import struct

import pytest

from handlers.scsi import (
    CHECK_CONDITION,
    GOOD,
    DeviceIdentity,
    FieldPointer,
    ScsiDevice,
    Sense,
    SenseData,
    SenseKey,
    TapeDrive,
    parse_sense,
    tape_drive_identity,
)
from handlers.scsi.spc import command_table

IDENT = DeviceIdentity("THUR", "TESTLU", "0100", "SN0001")


def cdb6(op: int, b1: int = 0, b2: int = 0, b3: int = 0, b4: int = 0) -> bytes:
    return bytes([op, b1, b2, b3, b4, 0])


def fresh() -> ScsiDevice:
    """A device whose POWER ON unit attention has already been consumed."""
    dev = ScsiDevice(IDENT)
    assert dev.execute(cdb6(0x00), None).status == CHECK_CONDITION
    return dev


def sense_of(resp) -> SenseData:
    assert resp.status == CHECK_CONDITION
    return parse_sense(bytes(resp.sense))


# ---- sense builders -----------------------------------------------------------------


def test_fixed_sense_layout_with_field_pointer() -> None:
    raw = SenseData(Sense.INVALID_FIELD_IN_CDB, field=FieldPointer(2, 5)).fixed()
    assert raw == bytes.fromhex("700005000000000a00000000240000cd0002")


def test_fixed_sense_information_and_tape_bits() -> None:
    raw = SenseData(Sense.FILEMARK, info=-3, filemark=True, eom=True, ili=True).fixed()
    assert raw[0] == 0xF0  # VALID
    assert raw[2] == 0xE0  # FILEMARK | EOM | ILI | NO SENSE
    assert raw[3:7] == bytes.fromhex("fffffffd")
    assert raw[7] == 10 and raw[12:14] == b"\x00\x01"


def test_descriptor_sense_layout() -> None:
    raw = SenseData(Sense.EOD, info=7, eom=True, field=None).descriptor()
    assert raw[:4] == bytes([0x72, 0x08, 0x00, 0x05])
    assert raw[7] == len(raw) - 8
    assert raw[8:20] == bytes([0, 0x0A, 0x80, 0]) + (7).to_bytes(8, "big")
    assert raw[20:24] == bytes([0x04, 0x02, 0x00, 0x40])
    back = parse_sense(raw)
    assert back.code == Sense.EOD and back.info == 7 and back.eom


def test_sense_names_and_aliases() -> None:
    assert Sense.BLANK_CHECK_EOD is Sense.EOD
    assert Sense.SOURCE_EMPTY.key == SenseKey.ILLEGAL_REQUEST
    assert (Sense.SOURCE_EMPTY.asc, Sense.SOURCE_EMPTY.ascq) == (0x3B, 0x0E)
    assert tuple(Sense.NOT_READY_BACKPRESSURE) == (SenseKey.NOT_READY, 0x04, 0x07)


# ---- dispatch -------------------------------------------------------------------------


def test_power_on_unit_attention_lifecycle() -> None:
    dev = ScsiDevice(IDENT)
    # INQUIRY neither reports nor consumes it.
    assert dev.execute(cdb6(0x12, b4=36), None).status == GOOD
    s = sense_of(dev.execute(cdb6(0x00), None))
    assert s.code == Sense.POWER_ON_RESET
    assert dev.execute(cdb6(0x00), None).status == GOOD


def test_request_sense_returns_and_clears_unit_attention() -> None:
    dev = ScsiDevice(IDENT)
    resp = dev.execute(cdb6(0x03, b4=252), None)
    assert resp.status == GOOD
    assert parse_sense(bytes(resp.data)).code == Sense.POWER_ON_RESET
    assert dev.execute(cdb6(0x00), None).status == GOOD
    again = dev.execute(cdb6(0x03, b4=252), None)
    assert parse_sense(bytes(again.data)).code == Sense.NO_SENSE
    assert len(again.data) == 18


def test_request_sense_descriptor_format_and_allocation() -> None:
    dev = fresh()
    resp = dev.execute(cdb6(0x03, b1=0x01, b4=252), None)
    assert bytes(resp.data)[:4] == bytes([0x72, 0, 0, 0])
    assert dev.execute(cdb6(0x03, b4=0), None).data == b""
    assert len(dev.execute(cdb6(0x03, b4=1), None).data) == 1


def test_unknown_opcode_and_empty_cdb() -> None:
    dev = fresh()
    assert sense_of(dev.execute(bytes([0xC7] + [0] * 11), None)).code == Sense.INVALID_OPCODE
    assert sense_of(dev.execute(b"", None)).code == Sense.INVALID_OPCODE


@pytest.mark.parametrize("cdb", [b"\x12", b"\x12\x00\x00", b"\x5a\x00\x3f", b"\xa3\x0c"])
def test_short_cdb_is_invalid_field_not_an_exception(cdb: bytes) -> None:
    assert sense_of(fresh().execute(cdb, None)).code == Sense.INVALID_FIELD_IN_CDB


def test_naca_in_control_byte_rejected_with_pointer() -> None:
    s = sense_of(fresh().execute(bytes([0x00, 0, 0, 0, 0, 0x04]), None))
    assert s.code == Sense.INVALID_FIELD_IN_CDB
    assert s.field == FieldPointer(5, 2, True)


def test_unexpected_exception_becomes_hardware_error(caplog) -> None:
    class Broken(ScsiDevice):
        def check_ready(self) -> None:
            raise RuntimeError("bug")

    dev = Broken(IDENT)
    dev.execute(cdb6(0x03, b4=18), None)  # drop the UA
    resp = dev.execute(cdb6(0x00), None)
    assert sense_of(resp).code == Sense.HARDWARE_ERROR
    assert "bug" in caplog.text


# ---- INQUIRY / VPD -------------------------------------------------------------------


def test_standard_inquiry_bytes() -> None:
    data = bytes(fresh().execute(cdb6(0x12, b4=96), None).data)
    assert len(data) == 96
    assert data[:8] == bytes([0x1F, 0x00, 0x06, 0x02, 91, 0, 0, 0x02])
    assert data[8:36] == b"THUR    TESTLU          0100"
    assert data[58:62] == bytes.fromhex("00a00460")


@pytest.mark.parametrize("alloc", [0, 1, 5, 36, 95, 96, 255])
def test_inquiry_allocation_length_truncates(alloc: int) -> None:
    resp = fresh().execute(bytes([0x12, 0, 0, alloc >> 8, alloc & 0xFF, 0]), None)
    assert resp.status == GOOD and len(resp.data) == min(alloc, 96)


def test_inquiry_page_code_without_evpd_is_invalid() -> None:
    s = sense_of(fresh().execute(cdb6(0x12, 0, 0x80, 0, 255), None))
    assert s.code == Sense.INVALID_FIELD_IN_CDB and s.field == FieldPointer(2, 7)


def test_vpd_supported_serial_and_identification() -> None:
    dev = fresh()
    assert bytes(dev.execute(cdb6(0x12, 1, 0x00, 0, 255), None).data) == bytes(
        [0x1F, 0, 0, 3, 0x00, 0x80, 0x83]
    )
    assert bytes(dev.execute(cdb6(0x12, 1, 0x80, 0, 255), None).data) == (
        bytes([0x1F, 0x80, 0, 6]) + b"SN0001"
    )
    vpd83 = bytes(dev.execute(cdb6(0x12, 1, 0x83, 0, 255), None).data)
    assert vpd83[:2] == bytes([0x1F, 0x83])
    assert struct.unpack_from(">H", vpd83, 2)[0] == len(vpd83) - 4
    # NAA-6 designator, binary, LU association, stable across instances.
    assert vpd83[4:8] == bytes([0x01, 0x03, 0x00, 0x10])
    naa = vpd83[8:24]
    assert naa[0] >> 4 == 6 and naa == IDENT.naa()
    assert naa == DeviceIdentity("X", "Y", "1", "SN0001").naa()
    assert naa != DeviceIdentity("THUR", "TESTLU", "0100", "SN0002").naa()
    # T10 vendor id designator: vendor + product + serial.
    assert vpd83[24:28] == bytes([0x02, 0x01, 0x00, 8 + 16 + 6])
    assert vpd83[28:] == b"THUR    TESTLU          SN0001"
    s = sense_of(dev.execute(cdb6(0x12, 1, 0xB0, 0, 255), None))
    assert s.code == Sense.INVALID_FIELD_IN_CDB


def test_identity_rejects_bad_strings() -> None:
    with pytest.raises(ValueError):
        DeviceIdentity("TOOLONGVENDOR", "P", "1", "S")
    with pytest.raises(ValueError):
        DeviceIdentity("V", "P", "1", "has space")


# ---- MODE SENSE / SELECT ---------------------------------------------------------------


def test_mode_sense_all_pages_and_subpage_forms() -> None:
    dev = fresh()
    six = bytes(dev.execute(cdb6(0x1A, 0x08, 0x3F, 0, 255), None).data)
    assert six[0] == len(six) - 1 and six[3] == 0
    assert six[4:6] == bytes([0x0A, 0x0A]) and six[16:18] == bytes([0x1C, 0x0A])
    ten = bytes(dev.execute(bytes([0x5A, 0x08, 0x3F, 0xFF, 0, 0, 0, 1, 0, 0]), None).data)
    assert struct.unpack_from(">H", ten)[0] == len(ten) - 2
    assert ten[8:] == six[4:]


def test_mode_sense_unknown_page_and_saved_values() -> None:
    dev = fresh()
    s = sense_of(dev.execute(cdb6(0x1A, 0, 0x05, 0, 255), None))
    assert s.code == Sense.INVALID_FIELD_IN_CDB and s.field == FieldPointer(2, 5)
    s = sense_of(dev.execute(cdb6(0x1A, 0, 0xC0 | 0x0A, 0, 255), None))
    assert s.code == Sense.SAVING_PARAMETERS_NOT_SUPPORTED


def test_mode_select_round_trip_sets_d_sense() -> None:
    dev = fresh()
    changeable = bytes(dev.execute(cdb6(0x1A, 0x08, 0x40 | 0x0A, 0, 255), None).data)
    assert changeable[4 + 2] == 0x04  # only D_SENSE
    current = bytearray(dev.execute(cdb6(0x1A, 0x08, 0x0A, 0, 255), None).data)
    current[0] = 0  # mode data length is reserved in MODE SELECT
    current[4 + 2] |= 0x04
    resp = dev.execute(cdb6(0x15, 0x10, 0, 0, len(current)), memoryview(bytes(current)))
    assert resp.status == GOOD
    # CHECK CONDITION now carries descriptor-format sense.
    resp = dev.execute(bytes([0xC7, 0, 0, 0, 0, 0]), None)
    assert bytes(resp.sense)[0] == 0x72
    assert parse_sense(bytes(resp.sense)).code == Sense.INVALID_OPCODE


def test_mode_select_rejects_unchangeable_bits_with_pointer() -> None:
    dev = fresh()
    params = bytearray(dev.execute(cdb6(0x1A, 0x08, 0x0A, 0, 255), None).data)
    params[0] = 0
    params[4 + 3] |= 0x10  # QAM is not changeable
    s = sense_of(dev.execute(cdb6(0x15, 0x10, 0, 0, len(params)), memoryview(bytes(params))))
    assert s.code == Sense.INVALID_FIELD_IN_PARAM_LIST
    assert s.field == FieldPointer(7, 4, in_cdb=False)
    # Nothing was applied.
    assert dev.execute(cdb6(0x1A, 0x08, 0x0A, 0, 255), None).data[7] == 0


def test_mode_select_length_errors() -> None:
    dev = fresh()
    s = sense_of(dev.execute(cdb6(0x15, 0x10, 0, 0, 20), memoryview(bytes(8))))
    assert s.code == Sense.PARAMETER_LIST_LENGTH_ERROR
    s = sense_of(dev.execute(cdb6(0x15, 0x10, 0, 0, 3), memoryview(bytes(3))))
    assert s.code == Sense.PARAMETER_LIST_LENGTH_ERROR
    # Saving pages is not supported.
    s = sense_of(dev.execute(cdb6(0x15, 0x11, 0, 0, 0), None))
    assert s.code == Sense.INVALID_FIELD_IN_CDB and s.field == FieldPointer(1, 0)
    # A block descriptor to a device without block descriptors.
    with_descriptor = memoryview(bytes([0, 0, 0, 8]) + bytes(8))
    s = sense_of(dev.execute(cdb6(0x15, 0x10, 0, 0, 12), with_descriptor))
    assert s.code == Sense.INVALID_FIELD_IN_PARAM_LIST


# ---- LOG SENSE -------------------------------------------------------------------------


def test_log_sense_supported_pages_and_unknown_page() -> None:
    dev = TapeDrive(tape_drive_identity("TD00000001"))
    dev.execute(cdb6(0x03, b4=18), None)
    data = bytes(dev.execute(bytes([0x4D, 0, 0x40, 0, 0, 0, 0, 0, 255, 0]), None).data)
    assert data[:4] == bytes([0, 0, 0, 5]) and data[4:] == bytes([0x00, 0x0C, 0x17, 0x1B, 0x2E])
    s = sense_of(dev.execute(bytes([0x4D, 0, 0x40 | 0x33, 0, 0, 0, 0, 0, 255, 0]), None))
    assert s.code == Sense.INVALID_FIELD_IN_CDB


# ---- REPORT SUPPORTED OPERATION CODES ----------------------------------------------------


def rsoc(dev: ScsiDevice, option: int, op: int = 0, sa: int = 0, alloc: int = 4096) -> bytes:
    cdb = bytes([0xA3, 0x0C, option, op]) + struct.pack(">HI", sa, alloc) + bytes(2)
    resp = dev.execute(cdb, None)
    assert resp.status == GOOD, parse_sense(bytes(resp.sense))
    return bytes(resp.data)


def test_rsoc_all_commands_matches_the_dispatch_table() -> None:
    dev = TapeDrive(tape_drive_identity("TD00000001"))
    dev.execute(cdb6(0x03, b4=18), None)
    data = rsoc(dev, 0)
    length = struct.unpack_from(">I", data)[0]
    assert length == len(data) - 4
    listed = [(data[i], struct.unpack_from(">H", data, i + 2)[0], data[i + 5] & 1,
               struct.unpack_from(">H", data, i + 6)[0]) for i in range(4, len(data), 8)]
    table = command_table(TapeDrive)
    assert [(c.opcode, c.service_action or 0, int(c.service_action is not None), c.cdb_length)
            for c in table] == listed
    # Every listed command is dispatched (never INVALID OPCODE).
    for op, _sa, _has, length in listed:
        resp = dev.execute(bytes([op]) + bytes(length - 1), None)
        assert resp.status == GOOD or parse_sense(bytes(resp.sense)).code != Sense.INVALID_OPCODE


def test_rsoc_one_command_forms() -> None:
    dev = fresh()
    one = rsoc(dev, 1, 0x12)
    assert one[1] & 0x07 == 0x03 and struct.unpack_from(">H", one, 2)[0] == 6
    assert one[4:] == bytes([0x12, 0x01, 0xFF, 0xFF, 0xFF, 0x00])
    assert rsoc(dev, 1, 0xC7)[1] & 0x07 == 0x01  # not supported
    sa = rsoc(dev, 2, 0xA3, 0x0C)
    assert sa[4:6] == bytes([0xA3, 0x0C]) and len(sa) == 4 + 12
    with_timeouts = rsoc(dev, 0x80 | 1, 0x00)
    assert with_timeouts[1] & 0x80 and len(with_timeouts) == 4 + 6 + 12
    # An opcode with service actions asked with option 1 is an invalid field.
    cdb = bytes([0xA3, 0x0C, 1, 0xA3]) + struct.pack(">HI", 0, 100) + bytes(2)
    assert sense_of(dev.execute(cdb, None)).code == Sense.INVALID_FIELD_IN_CDB
    assert len(rsoc(dev, 0, alloc=1)) == 1


def test_unknown_service_action_points_at_byte_1() -> None:
    s = sense_of(fresh().execute(bytes([0xA3, 0x1F]) + bytes(10), None))
    assert s.code == Sense.INVALID_FIELD_IN_CDB and s.field == FieldPointer(1, 4)


def test_wants_data_out() -> None:
    dev = fresh()
    assert dev.wants_data_out(cdb6(0x15))
    assert dev.wants_data_out(bytes([0x4C] + [0] * 9))
    assert not dev.wants_data_out(cdb6(0x12))
    assert not dev.wants_data_out(b"")
    assert not dev.wants_data_out(b"\xc7")


def test_prevent_allow() -> None:
    dev = fresh()
    assert dev.execute(cdb6(0x1E, b4=1), None).status == GOOD and dev.prevent_removal
    assert dev.execute(cdb6(0x1E, b4=0), None).status == GOOD and not dev.prevent_removal
    assert sense_of(dev.execute(cdb6(0x1E, b4=2), None)).code == Sense.INVALID_FIELD_IN_CDB

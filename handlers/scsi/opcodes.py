"""Operation codes of the commands the tape drive and the medium changer see.

Several opcodes mean different things on different device types (2Bh is LOCATE(10) on a
tape drive and POSITION TO ELEMENT on a changer); IntEnum keeps the second name as an
alias of the first, which is harmless because dispatch is per device class.
"""

from __future__ import annotations

from enum import IntEnum


class Op(IntEnum):
    TEST_UNIT_READY = 0x00
    REWIND = 0x01
    REQUEST_SENSE = 0x03
    FORMAT_MEDIUM = 0x04
    READ_BLOCK_LIMITS = 0x05
    INITIALIZE_ELEMENT_STATUS = 0x07
    READ_6 = 0x08
    WRITE_6 = 0x0A
    SET_CAPACITY = 0x0B
    WRITE_FILEMARKS_6 = 0x10
    SPACE_6 = 0x11
    INQUIRY = 0x12
    VERIFY_6 = 0x13
    MODE_SELECT_6 = 0x15
    RESERVE_6 = 0x16
    RELEASE_6 = 0x17
    ERASE_6 = 0x19
    MODE_SENSE_6 = 0x1A
    LOAD_UNLOAD = 0x1B
    RECEIVE_DIAGNOSTIC_RESULTS = 0x1C
    SEND_DIAGNOSTIC = 0x1D
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
    LOCATE_10 = 0x2B
    POSITION_TO_ELEMENT = 0x2B
    READ_POSITION = 0x34
    INITIALIZE_ELEMENT_STATUS_WITH_RANGE = 0x37
    WRITE_BUFFER = 0x3B
    READ_BUFFER = 0x3C
    REPORT_DENSITY_SUPPORT = 0x44
    LOG_SELECT = 0x4C
    LOG_SENSE = 0x4D
    MODE_SELECT_10 = 0x55
    MODE_SENSE_10 = 0x5A
    PERSISTENT_RESERVE_IN = 0x5E
    PERSISTENT_RESERVE_OUT = 0x5F
    WRITE_FILEMARKS_16 = 0x80
    READ_REVERSE_16 = 0x81
    ALLOW_OVERWRITE = 0x82
    READ_ATTRIBUTE = 0x8C
    WRITE_ATTRIBUTE = 0x8D
    SPACE_16 = 0x91
    LOCATE_16 = 0x92
    REPORT_LUNS = 0xA0
    SECURITY_PROTOCOL_IN = 0xA2
    MAINTENANCE_IN = 0xA3
    MAINTENANCE_OUT = 0xA4
    MOVE_MEDIUM = 0xA5
    EXCHANGE_MEDIUM = 0xA6
    SECURITY_PROTOCOL_OUT = 0xB5
    READ_ELEMENT_STATUS = 0xB8
    # Direct-access block devices (SBC-3). Opcodes shared with the tape drive or the
    # changer (1Bh, 34h, 91h, 04h) become aliases of the names above.
    FORMAT_UNIT = 0x04
    START_STOP_UNIT = 0x1B
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    WRITE_AND_VERIFY_10 = 0x2E
    VERIFY_10 = 0x2F
    PRE_FETCH_10 = 0x34
    SYNCHRONIZE_CACHE_10 = 0x35
    READ_DEFECT_DATA_10 = 0x37
    WRITE_SAME_10 = 0x41
    UNMAP = 0x42
    EXTENDED_COPY = 0x83
    RECEIVE_COPY_RESULTS = 0x84
    READ_16 = 0x88
    COMPARE_AND_WRITE = 0x89
    WRITE_16 = 0x8A
    WRITE_AND_VERIFY_16 = 0x8E
    VERIFY_16 = 0x8F
    PRE_FETCH_16 = 0x90
    SYNCHRONIZE_CACHE_16 = 0x91
    WRITE_SAME_16 = 0x93
    SERVICE_ACTION_IN_16 = 0x9E
    READ_12 = 0xA8
    WRITE_12 = 0xAA
    WRITE_AND_VERIFY_12 = 0xAE
    VERIFY_12 = 0xAF
    READ_DEFECT_DATA_12 = 0xB7


class MaintenanceIn(IntEnum):
    """Service actions of MAINTENANCE IN (A3h)."""

    REPORT_IDENTIFYING_INFORMATION = 0x05
    REPORT_TARGET_PORT_GROUPS = 0x0A
    REPORT_SUPPORTED_OPERATION_CODES = 0x0C
    REPORT_SUPPORTED_TMFS = 0x0D
    REPORT_TIMESTAMP = 0x0F


class ServiceActionIn16(IntEnum):
    """Service actions of SERVICE ACTION IN(16) (9Eh) on a block device."""

    READ_CAPACITY_16 = 0x10
    GET_LBA_STATUS = 0x12


class CopyResults(IntEnum):
    """Service actions of RECEIVE COPY RESULTS (84h) and EXTENDED COPY (83h), LID1."""

    EXTENDED_COPY_LID1 = 0x00
    COPY_STATUS = 0x00
    OPERATING_PARAMETERS = 0x03


def group_cdb_length(opcode: int) -> int | None:
    """CDB length implied by the opcode's group code (SPC-4 4.2.5.1); None if not fixed."""
    return {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}.get(opcode >> 5)

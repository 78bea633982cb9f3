"""The LTO-8 tape drive: what st and `mt status` need, load/unload, identity, pages.

Also the shared helpers (CDB builders, byte-exact sense) of the test_scsi_ssc_* modules.
"""

from __future__ import annotations

import struct

import pytest

from handlers.scsi import (
    CHECK_CONDITION,
    GOOD,
    LTO8,
    Medium,
    Response,
    Sense,
    TapeDrive,
    parse_sense,
    tape_drive_identity,
)
from handlers.scsi.ssc import MediumRemovalPrevented
from thur.tape import BackendFailure, Backpressure, MediumCorrupt, MemoryCartridge, TapeError

MB = 1_000_000


def FakeMedium(barcode: str = "TST001L8", capacity: int = 100 * MB,  # noqa: N802
               **kwargs: bool) -> MemoryCartridge:
    """A blank cartridge (other tests build libraries with it)."""
    return MemoryCartridge(barcode, capacity, **kwargs)


def drive() -> TapeDrive:
    d = TapeDrive(tape_drive_identity("TD00000001"))
    d.execute(bytes([0x03, 0, 0, 0, 18, 0]), None)  # consume POWER ON
    return d


def run(d: TapeDrive, *cdb: int, data: bytes | None = None):
    return d.execute(bytes(cdb), memoryview(data) if data is not None else None)


def code(resp: Response):
    assert resp.status == CHECK_CONDITION
    return parse_sense(bytes(resp.sense)).code


def loaded(capacity: int = 100 * MB, barcode: str = "TST001L8",
           **kwargs: bool) -> tuple[TapeDrive, MemoryCartridge]:
    """A drive with a blank cartridge threaded and the 28/00 unit attention consumed."""
    d = drive()
    m = FakeMedium(barcode, capacity, **kwargs)
    d.load(m)
    assert code(run(d, 0, 0, 0, 0, 0, 0)) == Sense.MEDIUM_MAY_HAVE_CHANGED
    return d, m


def expect(resp: Response, key: int, asc: int, ascq: int, *, info: int | None = None,
           fm: bool = False, eom: bool = False, ili: bool = False,
           field: tuple[int, int] | None = None) -> None:
    """Byte-exact fixed-format sense (built here by hand, independent of the encoder).

    `field` is a CDB field pointer (byte, bit) in the sense-key-specific bytes."""
    want = bytearray(18)
    want[0] = 0x70 | (0x80 if info is not None else 0)
    want[2] = key | (0x80 if fm else 0) | (0x40 if eom else 0) | (0x20 if ili else 0)
    if info is not None:
        want[3:7] = (info & 0xFFFFFFFF).to_bytes(4, "big")
    want[7], want[12], want[13] = 10, asc, ascq
    if field is not None:
        want[15:18] = bytes([0xC8 | field[1]]) + field[0].to_bytes(2, "big")
    assert resp.status == CHECK_CONDITION, "expected CHECK CONDITION"
    assert bytes(resp.sense) == bytes(want), parse_sense(bytes(resp.sense))


def ok(resp: Response) -> bytes:
    assert resp.status == GOOD, parse_sense(bytes(resp.sense))
    return bytes(resp.data)


def b3(n: int) -> list[int]:
    return list((n & 0xFFFFFF).to_bytes(3, "big"))


def read6(n: int, *, fixed: bool = False, sili: bool = False) -> list[int]:
    return [0x08, int(fixed) | (2 if sili else 0), *b3(n), 0]


def write6(n: int, *, fixed: bool = False) -> list[int]:
    return [0x0A, int(fixed), *b3(n), 0]


def wfm(n: int = 1) -> list[int]:
    return [0x10, 0, *b3(n), 0]


def space6(code_: int, count: int) -> list[int]:
    return [0x11, code_, *b3(count), 0]


def space16(code_: int, count: int) -> list[int]:
    return [0x91, code_, 0, 0, *(count & (2**64 - 1)).to_bytes(8, "big"), 0, 0, 0, 0]


def locate10(obj: int, partition: int | None = None, *, bt: bool = False) -> list[int]:
    cp = 0x02 if partition is not None else 0
    return [0x2B, cp | (0x04 if bt else 0), 0, *obj.to_bytes(4, "big"), 0,
            partition or 0, 0]


def locate16(ident: int, partition: int | None = None, *, dest: int = 0) -> list[int]:
    cp = 0x02 if partition is not None else 0
    return [0x92, cp | (dest << 3), 0, partition or 0, *ident.to_bytes(8, "big"), 0, 0, 0, 0]


def position(d: TapeDrive) -> tuple[int, int, int]:
    """(partition, object number, file id) from READ POSITION long form."""
    data = ok(run(d, 0x34, 6, 0, 0, 0, 0, 0, 0, 0, 0))
    return struct.unpack_from(">IQQ", data, 4)


def select_block_length(d: TapeDrive, length: int) -> None:
    """What st sends for `mt setblk N`: MODE SELECT(6), header + one block descriptor."""
    params = bytes([0, 0, 0x10, 8, LTO8.code, 0, 0, 0, 0, *b3(length)])
    ok(run(d, 0x15, 0x10, 0, 0, 12, 0, data=params))


def test_fake_medium_satisfies_protocol() -> None:
    assert isinstance(FakeMedium(), Medium)


def test_identity_inquiry() -> None:
    d = drive()
    std = bytes(run(d, 0x12, 0, 0, 0, 96, 0).data)
    assert std[0] == 0x01 and std[1] == 0x80  # sequential access, removable
    assert std[8:36] == b"THUR    Ultrium 8-SCSI  0100"
    pages = bytes(run(d, 0x12, 1, 0, 0, 255, 0).data)
    assert pages[4:] == bytes([0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2])
    assert bytes(run(d, 0x12, 1, 0xB0, 0, 255, 0).data) == bytes([1, 0xB0, 0, 2, 1, 0])
    assert bytes(run(d, 0x12, 1, 0xB1, 0, 255, 0).data)[4:] == b"TD00000001"
    b2 = bytes(run(d, 0x12, 1, 0xB2, 0, 255, 0).data)
    assert b2[:4] == bytes([1, 0xB2, 0, 12])
    flags = int.from_bytes(b2[8:16], "big")
    assert flags >> 63 == 1  # flag 1 (read warning) supported
    assert (flags >> (64 - 3)) & 1 == 1  # flag 3 (hard error)


# ---- exactly what st sends on open (O_NONBLOCK) and what `mt status` needs -----------------


def test_st_open_sequence_without_cartridge() -> None:
    d = TapeDrive(tape_drive_identity("TD00000001"))
    # test_ready(): TUR, retried through unit attentions, ends in NOT READY 3A/00.
    assert code(run(d, 0, 0, 0, 0, 0, 0)) == Sense.POWER_ON_RESET
    assert code(run(d, 0, 0, 0, 0, 0, 0)) == Sense.MEDIUM_NOT_PRESENT
    # Those the driver sends when a cartridge is present work without one too.
    assert bytes(run(d, 0x05, 0, 0, 0, 0, 0).data) == bytes([0, 0xFF, 0xFF, 0xFF, 0, 1])
    ms = bytes(run(d, 0x1A, 0, 0, 0, 12, 0).data)
    assert ms == bytes([11, 0, 0x10, 8, 0, 0, 0, 0, 0, 0, 0, 0])


def test_media_commands_not_ready_without_cartridge() -> None:
    d = drive()
    for cdb in (
        [0x01, 0, 0, 0, 0, 0],
        [0x1B, 0, 0, 0, 1, 0],
        [0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0x08, 0, 0, 0, 1, 0],
        [0x0A, 0, 0, 0, 1, 0],
        [0x10, 0, 0, 0, 1, 0],
        [0x11, 0, 0, 0, 1, 0],
        [0x2B, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0x44, 1, 0, 0, 0, 0, 0, 1, 0, 0],
    ):
        assert code(run(d, *cdb)) == Sense.MEDIUM_NOT_PRESENT, hex(cdb[0])


def test_load_reports_medium_changed_then_ready() -> None:
    d = drive()
    d.load(FakeMedium())
    assert code(run(d, 0, 0, 0, 0, 0, 0)) == Sense.MEDIUM_MAY_HAVE_CHANGED
    assert run(d, 0, 0, 0, 0, 0, 0).status == GOOD
    ms = bytes(run(d, 0x1A, 0, 0, 0, 12, 0).data)
    assert ms[4] == LTO8.code


def test_read_position_forms() -> None:
    d, m = loaded()
    for record in (b"a", b"b", b"c", None, b"d", b"e"):
        m.write_filemarks(1) if record is None else m.write(record)
    m.locate(0, 5)
    short = ok(run(d, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert len(short) == 20 and short[0] == 0 and struct.unpack_from(">II", short, 4) == (5, 5)
    assert ok(run(d, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0)) == short  # BT: same ids
    long = ok(run(d, 0x34, 6, 0, 0, 0, 0, 0, 0, 0, 0))
    assert len(long) == 32 and struct.unpack_from(">IQQ", long, 4) == (0, 5, 1)
    ext = ok(run(d, 0x34, 8, 0, 0, 0, 0, 0, 0, 32, 0))
    assert len(ext) == 32 and ext[2:4] == b"\x00\x1c"
    assert struct.unpack_from(">QQ", ext, 8) == (5, 5)
    assert len(run(d, 0x34, 8, 0, 0, 0, 0, 0, 0, 4, 0).data) == 4
    assert code(run(d, 0x34, 3, 0, 0, 0, 0, 0, 0, 0, 0)) == Sense.INVALID_FIELD_IN_CDB
    m.locate(0, 0)
    assert ok(run(d, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0))[0] == 0x80  # BOP


def test_load_unload_and_prevent() -> None:
    d, m = loaded()
    m.write(b"x" * 10)
    assert run(d, 0x1E, 0, 0, 0, 1, 0).status == GOOD
    expect(run(d, 0x1B, 0, 0, 0, 0, 0), 0x5, 0x53, 0x02)  # removal prevented
    with pytest.raises(MediumRemovalPrevented):
        d.unload()
    assert m.load_count == 0
    run(d, 0x1E, 0, 0, 0, 0, 0)
    flushes = m.flushes
    ok(run(d, 0x1B, 0, 0, 0, 0, 0))  # unload: cartridge waits in the drive, flushed
    assert m.load_count == 1 and m.flushes == flushes + 1
    assert code(run(d, 0, 0, 0, 0, 0, 0)) == Sense.MEDIUM_NOT_PRESENT
    assert code(run(d, 0x1B, 0, 0, 0, 0x05, 0)) == Sense.INVALID_FIELD_IN_CDB  # LOAD+EOT
    m.locate(0, 1)
    ok(run(d, 0x1B, 0, 0, 0, 0x01, 0))  # load: threaded at BOP of partition 0
    assert position(d) == (0, 0, 0)
    ok(run(d, 0x1B, 0x01, 0, 0, 0x03, 0))  # load + retension, immediate
    # The changer takes a threaded cartridge: it is flushed and counted once.
    assert d.unload() is m and d.medium is None and m.load_count == 2
    assert code(run(d, 0x1B, 0, 0, 0, 0x01, 0)) == Sense.MEDIUM_NOT_PRESENT


class FailingCartridge(MemoryCartridge):
    def __init__(self, error: TapeError) -> None:
        super().__init__("ERR001L8", 100 * MB)
        self.error = error

    def locate(self, partition: int, object_id: int) -> None:
        raise self.error

    def read(self) -> bytes | None:
        raise self.error


@pytest.mark.parametrize(("error", "sense"), [
    (BackendFailure("bucket unreachable"), (0x4, 0x44, 0x00)),
    (Backpressure("cache full"), (0x2, 0x04, 0x07)),
    (MediumCorrupt("chunk hash mismatch"), (0x3, 0x11, 0x00)),
])
def test_storage_errors_map_to_sense(error: TapeError, sense: tuple[int, int, int]) -> None:
    d = drive()
    d.load(FailingCartridge(error))
    run(d, 0x03, 0, 0, 0, 18, 0)
    expect(run(d, 0x01, 0, 0, 0, 0, 0), *sense)
    expect(run(d, *read6(100)), *sense, info=100)


def test_block_size_mode_select_round_trip() -> None:
    d = drive()
    params = bytes([0, 0, 0x10, 8, LTO8.code, 0, 0, 0, 0, 0, 0x02, 0x00])
    assert run(d, 0x15, 0x10, 0, 0, 12, 0, data=params).status == GOOD
    assert d.block_length == 512
    ms = bytes(run(d, 0x1A, 0, 0, 0, 12, 0).data)
    assert ms[9:12] == bytes([0, 2, 0])
    # Variable mode again.
    run(d, 0x15, 0x10, 0, 0, 12, 0, data=bytes([0, 0, 0x10, 8]) + bytes(8))
    assert d.block_length == 0
    # An unsupported density is rejected and points at the descriptor's density byte.
    bad = bytes([0, 0, 0x10, 8, 0x42]) + bytes(7)
    resp = run(d, 0x15, 0x10, 0, 0, 12, 0, data=bad)
    sense = parse_sense(bytes(resp.sense))
    assert sense.code == Sense.INVALID_FIELD_IN_PARAM_LIST and sense.field.byte == 4


def test_compression_page_change_like_st() -> None:
    d = drive()
    cur = bytearray(run(d, 0x1A, 0x08, 0x0F, 0, 255, 0).data)
    assert cur[3] == 0 and cur[4] == 0x0F and cur[6] & 0x80  # DBD: no descriptor; DCE on
    cur[0] = 0
    cur[6] &= ~0x80
    assert run(d, 0x15, 0x10, 0, 0, len(cur), 0, data=bytes(cur)).status == GOOD
    assert not run(d, 0x1A, 0x08, 0x0F, 0, 255, 0).data[6] & 0x80
    # Device configuration: select data compression algorithm must be 0 or 1.
    dc = bytearray(run(d, 0x1A, 0x08, 0x10, 0, 255, 0).data)
    dc[0] = 0
    dc[4 + 14] = 7
    resp = run(d, 0x15, 0x10, 0, 0, len(dc), 0, data=bytes(dc))
    s = parse_sense(bytes(resp.sense))
    assert s.code == Sense.INVALID_FIELD_IN_PARAM_LIST and s.field.byte == 4 + 14


def test_mode_pages_present() -> None:
    d = drive()
    data = bytes(run(d, 0x5A, 0x08, 0x3F, 0xFF, 0, 0, 0, 4, 0, 0).data)
    pos, found = 8, []
    while pos < len(data):
        spf = data[pos] & 0x40
        found.append((data[pos] & 0x3F, data[pos + 1] if spf else 0))
        pos += (struct.unpack_from(">H", data, pos + 2)[0] + 4) if spf else data[pos + 1] + 2
    assert found == [(0x0A, 0), (0x0F, 0), (0x10, 0), (0x10, 1), (0x11, 0), (0x1C, 0)]


def test_report_density_support() -> None:
    d = drive()
    data = bytes(run(d, 0x44, 0, 0, 0, 0, 0, 0, 1, 0, 0).data)
    assert struct.unpack_from(">H", data)[0] == len(data) - 2 == 54
    desc = data[4:]
    assert desc[0] == desc[1] == 0x5E and desc[2] & 0x20  # default density
    assert struct.unpack_from(">I", desc, 12)[0] == 12_000_000
    assert desc[16:24] == b"LTO-CVE " and desc[24:32] == b"U-832   "
    d.load(FakeMedium(capacity=6_000_000_000_000, write_protected=True))
    run(d, 0x03, 0, 0, 0, 18, 0)
    media = bytes(run(d, 0x44, 1, 0, 0, 0, 0, 0, 1, 0, 0).data)[4:]
    assert struct.unpack_from(">I", media, 12)[0] == 6_000_000 and not media[2] & 0x80
    assert len(run(d, 0x44, 0, 0, 0, 0, 0, 0, 0, 3, 0).data) == 3


def test_log_pages() -> None:
    d = drive()
    ta = bytes(run(d, 0x4D, 0, 0x40 | 0x2E, 0, 0, 0, 0, 2, 0, 0).data)
    assert ta[:4] == bytes([0x2E, 0, 0x01, 0x40]) and len(ta) == 4 + 64 * 5
    assert all(ta[4 + i * 5 + 4] == 0 for i in range(64))
    d.tapealerts.add(3)
    ta = bytes(run(d, 0x4D, 0, 0x40 | 0x2E, 0, 0, 0, 0, 2, 0, 0).data)
    assert ta[4 + 2 * 5 : 4 + 3 * 5] == bytes([0, 3, 0x23, 1, 1])
    assert not d.tapealerts  # TapeAlert flags are read-and-clear
    d.stats.host_written = 1234
    seq = bytes(run(d, 0x4D, 0, 0x40 | 0x0C, 0, 0, 0, 0, 2, 0, 0).data)
    assert seq[4:8] == bytes([0, 0, 0x20, 8]) and int.from_bytes(seq[8:16], "big") == 1234
    # LOG SELECT PCR resets the counters.
    assert run(d, 0x4C, 0x02, 0x40, 0, 0, 0, 0, 0, 0, 0).status == GOOD
    assert d.stats.host_written == 0
    vs = bytes(run(d, 0x4D, 0, 0x40 | 0x17, 0, 0, 0, 0, 2, 0, 0).data)
    assert vs[4:9] == bytes([0, 0, 0x23, 1, 0])  # page not valid without a cartridge

"""The thin disk's data path: READ/WRITE, VERIFY, WRITE AND VERIFY, SYNCHRONIZE CACHE,
WRITE SAME, UNMAP, GET LBA STATUS, COMPARE AND WRITE, and the volume-error mapping."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from handlers.scsi import DiskLimits, ThinDisk
from tests.unit.test_scsi_sbc import BS, cdb6, cdb10, cdb12, cdb16, disk, pattern, run, sense_of
from tests.unit.test_scsi_ssc import expect, ok
from tests.unit.volume_memory import MemoryVolume
from thur.volume.protocol import (
    BackendFailure,
    Backpressure,
    MediumCorrupt,
    OutOfRange,
    ShrinkRefused,
    VolumeError,
    WriteProtected,
)

N = 1024  # blocks on the test volume


def unmap_list(*descriptors: tuple[int, int]) -> bytes:
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in descriptors)
    return struct.pack(">HH4x", len(body) + 6, len(body)) + body


def unmap_cdb(length: int) -> bytes:
    return struct.pack(">BB4xBHB", 0x42, 0, 0, length, 0)


def caw_cdb(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQ3xBBB", 0x89, flags, lba, blocks, 0, 0)


def glbas_cdb(lba: int, alloc: int = 4096) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x12, lba, alloc, 0, 0)


# ---- READ / WRITE ---------------------------------------------------------------------------

READS = {6: (0x08, cdb6), 10: (0x28, cdb10), 12: (0xA8, cdb12), 16: (0x88, cdb16)}
WRITES = {6: (0x0A, cdb6), 10: (0x2A, cdb10), 12: (0xAA, cdb12), 16: (0x8A, cdb16)}


@pytest.mark.parametrize("size", [6, 10, 12, 16])
def test_write_then_read_every_cdb_size(size: int) -> None:
    d, vol = disk()
    wop, wcdb = WRITES[size]
    rop, rcdb = READS[size]
    data = pattern(3, seed=size)
    ok(run(d, wcdb(wop, 100, 3), data))
    assert ok(run(d, rcdb(rop, 100, 3))) == data
    assert vol.read(100, 3) == data


def test_unmapped_blocks_read_as_zeros() -> None:
    d, _ = disk()
    assert ok(run(d, cdb10(0x28, 7, 2))) == bytes(2 * BS)


def test_zero_blocks_is_a_no_op_but_six_byte_zero_means_256() -> None:
    d, vol = disk()
    resp = run(d, cdb10(0x28, 5, 0))
    assert ok(resp) == b""
    ok(run(d, cdb16(0x8A, N, 0)))  # LBA == capacity with 0 blocks: GOOD
    assert vol.writes == 0
    assert len(ok(run(d, cdb6(0x08, 0, 0)))) == 256 * BS


def test_dpo_and_fua_are_accepted() -> None:
    d, vol = disk()
    for flags in (0x10, 0x08, 0x18, 0x02):
        ok(run(d, cdb10(0x2A, 0, 1, flags), pattern(1)))
        ok(run(d, cdb16(0x88, 0, 1, flags)))
    assert vol.fua_writes == 2


@pytest.mark.parametrize("protect", range(1, 8))
def test_protection_fields_must_be_zero(protect: int) -> None:
    d, vol = disk()
    expect(run(d, cdb10(0x28, 0, 1, protect << 5)), 5, 0x24, 0, field=(1, 7))
    expect(run(d, cdb16(0x8A, 0, 1, protect << 5), pattern(1)), 5, 0x24, 0, field=(1, 7))
    assert vol.writes == 0


def test_transfer_length_above_the_maximum() -> None:
    d, _ = disk(limits=DiskLimits(max_transfer_bytes=64 * BS))
    expect(run(d, cdb10(0x28, 0, 65)), 5, 0x24, 0, field=(7, 7))
    expect(run(d, cdb16(0x8A, 0, 65), pattern(65)), 5, 0x24, 0, field=(10, 7))
    assert len(ok(run(d, cdb10(0x28, 0, 64)))) == 64 * BS


@pytest.mark.parametrize("given", [0, BS - 1, BS + 1, 2 * BS])
def test_data_out_must_match_the_transfer_length(given: int) -> None:
    d, vol = disk()
    expect(run(d, cdb10(0x2A, 0, 1), bytes(given) if given else None), 5, 0x0E, 0x03)
    assert vol.writes == 0


def test_write_protected_volume() -> None:
    d, vol = disk(write_protected=True)
    expect(run(d, cdb10(0x2A, 0, 1), pattern(1)), 7, 0x27, 0)
    expect(run(d, unmap_cdb(24), unmap_list((0, 1))), 7, 0x27, 0)
    expect(run(d, cdb10(0x41, 0, 1), bytes(BS)), 7, 0x27, 0)
    expect(run(d, caw_cdb(0, 1), bytes(2 * BS)), 7, 0x27, 0)
    ok(run(d, cdb10(0x28, 0, 1)))


# ---- out of range: every addressed command ---------------------------------------------

def _oob_commands() -> dict[str, Callable[[int, int], tuple[bytes, bytes | None]]]:
    def rw(op: int, build: Callable[..., bytes], data: bool) -> Callable[
            [int, int], tuple[bytes, bytes | None]]:
        return lambda lba, n: (build(op, lba, n), pattern(n) if data else None)

    cmds: dict[str, Callable[[int, int], tuple[bytes, bytes | None]]] = {}
    for size, (op, build) in READS.items():
        cmds[f"read{size}"] = rw(op, build, False)
    for size, (op, build) in WRITES.items():
        cmds[f"write{size}"] = rw(op, build, True)
    for name, op, build in (("10", 0x2F, cdb10), ("12", 0xAF, cdb12), ("16", 0x8F, cdb16)):
        cmds[f"verify{name}"] = rw(op, build, False)
        cmds[f"verify{name}-bytchk"] = (
            lambda lba, n, op=op, build=build: (build(op, lba, n, 0x02), pattern(n)))
    for name, op, build in (("10", 0x2E, cdb10), ("12", 0xAE, cdb12), ("16", 0x8E, cdb16)):
        cmds[f"write-verify{name}"] = rw(op, build, True)
    cmds["write-same10"] = lambda lba, n: (cdb10(0x41, lba, n), bytes(BS))
    cmds["write-same16"] = lambda lba, n: (cdb16(0x93, lba, n), pattern(1))
    cmds["write-same16-unmap"] = lambda lba, n: (cdb16(0x93, lba, n, 0x08), bytes(BS))
    cmds["unmap"] = lambda lba, n: (unmap_cdb(24), unmap_list((lba, n)))
    cmds["compare-and-write"] = lambda lba, n: (caw_cdb(lba, n), bytes(2 * n * BS))
    cmds["sync-cache10"] = lambda lba, n: (cdb10(0x35, lba, n), None)
    cmds["sync-cache16"] = lambda lba, n: (cdb16(0x91, lba, n), None)
    cmds["pre-fetch10"] = lambda lba, n: (cdb10(0x34, lba, n), None)
    cmds["pre-fetch16"] = lambda lba, n: (cdb16(0x90, lba, n), None)
    return cmds


OOB = _oob_commands()
SIXTEEN = [k for k in OOB if k.endswith("16") or k in ("unmap", "compare-and-write",
                                                        "write-same16-unmap")]


@pytest.mark.parametrize("name", sorted(OOB))
@pytest.mark.parametrize("where", ["straddling", "past-end", "way-past"])
def test_out_of_range_lba_is_05_21_00(name: str, where: str) -> None:
    d, vol = disk()
    lba, n = {"straddling": (N - 1, 2), "past-end": (N + 1, 1), "way-past": (N + 1000, 1)}[where]
    if name.startswith("read6") or name.startswith("write6"):
        lba &= 0x1FFFFF
    before = dict(vol.pages)
    cdb, data = OOB[name](lba, n)
    expect(run(d, cdb, data), 5, 0x21, 0)
    assert vol.pages == before and vol.writes == 0 and vol.flushes == 0


@pytest.mark.parametrize("name", sorted(SIXTEEN))
@pytest.mark.parametrize("lba", [2**63, 2**64 - 1, 1 << 52])
def test_huge_lbas_are_out_of_range(name: str, lba: int) -> None:
    d, _ = disk()
    cdb, data = OOB[name](lba, 1)
    expect(run(d, cdb, data), 5, 0x21, 0)


def test_zero_blocks_past_the_end_is_still_out_of_range() -> None:
    d, _ = disk()
    expect(run(d, cdb10(0x2A, N + 1, 0)), 5, 0x21, 0)
    expect(run(d, cdb10(0x2F, 0xFFFFFFFF, 0, 0x02)), 5, 0x21, 0)
    expect(run(d, cdb10(0x41, N + 1, 0), bytes(BS)), 5, 0x21, 0)


# ---- VERIFY / WRITE AND VERIFY ----------------------------------------------------------------

def test_verify_bytchk_modes() -> None:
    d, _ = disk()
    data = pattern(4)
    ok(run(d, cdb10(0x2A, 8, 4), data))
    ok(run(d, cdb10(0x2F, 8, 4)))  # BYTCHK 0: medium verification
    ok(run(d, cdb12(0xAF, 8, 4, 0x02), data))  # BYTCHK 01: compare
    bad = bytearray(data)
    bad[BS + 77] ^= 0xFF
    expect(run(d, cdb16(0x8F, 8, 4, 0x02), bytes(bad)), 0xE, 0x1D, 0, info=BS + 77)
    block = pattern(1, seed=9)
    ok(run(d, cdb10(0x41, 20, 3), block))
    ok(run(d, cdb10(0x2F, 20, 3, 0x06), block))  # BYTCHK 11: one block against each
    expect(run(d, cdb10(0x2F, 20, 4, 0x06), block), 0xE, 0x1D, 0, info=3 * BS)
    expect(run(d, cdb10(0x2F, 20, 3, 0x04)), 5, 0x24, 0, field=(1, 2))  # BYTCHK 10
    expect(run(d, cdb10(0x2F, 8, 4, 0x02), data[:-1]), 5, 0x0E, 0x03)


def test_verify_reports_a_corrupt_chunk_as_medium_error() -> None:
    d, vol = disk()
    vol.fail_next = MediumCorrupt("page 0")
    expect(run(d, cdb10(0x2F, 0, 8)), 3, 0x11, 0)


def test_write_and_verify_writes_durably_and_compares() -> None:
    d, vol = disk()
    data = pattern(2)
    ok(run(d, cdb10(0x2E, 4, 2, 0x02), data))
    assert vol.read(4, 2) == data and vol.fua_writes == 1
    ok(run(d, cdb16(0x8E, 4, 0), None))


# ---- SYNCHRONIZE CACHE --------------------------------------------------------------------------

def test_synchronize_cache_is_a_real_fence() -> None:
    d, vol = disk()
    ok(run(d, cdb10(0x35, 0, 0)))
    ok(run(d, cdb16(0x91, 5, 10)))
    ok(run(d, bytes([0x35, 0x02]) + bytes(8)))  # IMMED
    assert vol.flushes == 3
    vol.fail_next = BackendFailure("disk full")
    expect(run(d, cdb10(0x35, 0, 0)), 4, 0x44, 0)


# ---- WRITE SAME ------------------------------------------------------------------------------

def _lba_status(d: ThinDisk, lba: int) -> list[tuple[int, int, int]]:
    data = ok(run(d, glbas_cdb(lba)))
    return [struct.unpack_from(">QIB", data, pos)
            for pos in range(8, 4 + struct.unpack_from(">I", data)[0], 16)]


def test_write_same_zero_with_unmap_deallocates() -> None:
    d, vol = disk()
    ok(run(d, cdb10(0x2A, 0, 64), pattern(64)))
    ok(run(d, cdb10(0x41, 0, 32, 0x08), bytes(BS)))  # WRITE SAME(10) UNMAP, zeros
    assert ok(run(d, cdb10(0x28, 0, 32))) == bytes(32 * BS)
    assert _lba_status(d, 0) == [(0, 32, 1), (32, 32, 0), (64, N - 64, 1)]
    ok(run(d, cdb16(0x93, 32, 32, 0x09)))  # WRITE SAME(16) UNMAP NDOB
    assert _lba_status(d, 0) == [(0, N, 1)]
    assert not vol.pages


def test_write_same_repeats_a_non_zero_block() -> None:
    d, vol = disk()
    block = pattern(1, seed=3)
    ok(run(d, cdb16(0x93, 10, 300), block))
    assert vol.read(10, 300) == block * 300


def test_write_same_unmap_deallocates_whatever_the_pattern() -> None:
    # SBC-4: with UNMAP each LBA gets a write OR an unmap operation; we always unmap, so
    # the blocks read back as zeros (LBPRZ) as libiscsi's WriteSame10.UnmapUntilEnd checks.
    d, vol = disk()
    block = pattern(1, seed=3)
    ok(run(d, cdb10(0x2A, N - 16, 16), pattern(16)))  # one whole 64 KiB page
    ok(run(d, cdb10(0x41, N - 16, 0, 0x08), block))  # WRITE SAME(10) UNMAP, 0 = to the end
    assert vol.read(N - 16, 16) == bytes(16 * BS)
    assert _lba_status(d, N - 16) == [(N - 16, 16, 1)]  # deallocated, not written
    ok(run(d, cdb16(0x8A, 10, 2), pattern(2)))
    ok(run(d, cdb16(0x93, 10, 2, 0x08), block))  # WRITE SAME(16) UNMAP, non-zero block
    assert vol.read(10, 2) == bytes(2 * BS)
    # The data-out is still checked: one block exactly, before anything changes.
    ok(run(d, cdb16(0x8A, 20, 1), pattern(1)))
    expect(run(d, cdb16(0x93, 20, 1, 0x08), block[:100]), 5, 0x0E, 0x03)
    assert vol.read(20, 1) == pattern(1)


def test_write_same_zero_blocks_means_to_the_end() -> None:
    d, vol = disk()
    ok(run(d, cdb10(0x41, N - 5, 0), pattern(1)))
    assert vol.read(N - 5, 5) == pattern(1) * 5
    d2, _ = disk(limits=DiskLimits(max_write_same_bytes=100 * BS))
    expect(run(d2, cdb10(0x41, N - 101, 0), pattern(1)), 5, 0x24, 0, field=(7, 7))
    ok(run(d2, cdb10(0x41, N - 100, 0), pattern(1)))
    expect(run(d2, cdb16(0x93, 0, 101), pattern(1)), 5, 0x24, 0, field=(10, 7))


def test_write_same_rejections() -> None:
    d, vol = disk()
    expect(run(d, cdb10(0x41, 0, 1, 0x10), bytes(BS)), 5, 0x24, 0, field=(1, 4))  # ANCHOR
    expect(run(d, cdb10(0x41, 0, 1, 0x18), bytes(BS)), 5, 0x24, 0, field=(1, 4))
    expect(run(d, cdb10(0x41, 0, 1, 0x02), bytes(BS)), 5, 0x24, 0, field=(1, 1))  # LBDATA
    expect(run(d, cdb10(0x41, 0, 1, 0x08), bytes(BS // 2)), 5, 0x0E, 0x03)
    expect(run(d, cdb10(0x41, 0, 1, 0x08), bytes(2 * BS)), 5, 0x0E, 0x03)
    expect(run(d, cdb16(0x93, 0, 1, 0x01), bytes(BS)), 5, 0x0E, 0x03)  # NDOB with data
    assert vol.writes == 0 and not vol.pages


# ---- UNMAP --------------------------------------------------------------------------------------

def test_unmap_deallocates_and_reads_zero() -> None:
    d, vol = disk()
    ok(run(d, cdb10(0x2A, 0, 64), pattern(64)))
    ok(run(d, unmap_cdb(40), unmap_list((0, 16), (40, 8))))
    assert vol.read(0, 16) == bytes(16 * BS)
    assert vol.read(40, 8) == bytes(8 * BS)
    assert vol.read(16, 24) == pattern(64)[16 * BS : 40 * BS]
    assert _lba_status(d, 0)[0] == (0, 16, 1)


def test_unmap_zero_descriptors_and_zero_blocks() -> None:
    d, _ = disk()
    ok(run(d, unmap_cdb(0)))
    ok(run(d, unmap_cdb(8), unmap_list()))
    ok(run(d, unmap_cdb(24), unmap_list((N, 0))))


def test_a_bad_descriptor_leaves_the_data_unchanged() -> None:
    d, vol = disk()
    data = pattern(64)
    ok(run(d, cdb10(0x2A, 0, 64), data))
    params = unmap_list((0, 16), (16, 16), (N - 1, 2))
    expect(run(d, unmap_cdb(len(params)), params), 5, 0x21, 0)
    assert vol.read(0, 64) == data
    too_many = DiskLimits(max_unmap_bytes=20 * BS)
    d2, vol2 = disk(limits=too_many)
    ok(run(d2, cdb10(0x2A, 0, 64), data))
    params = unmap_list((0, 16), (16, 16))
    resp = run(d2, unmap_cdb(len(params)), params)
    assert sense_of(resp) == (5, 0x26, 0)
    assert vol2.read(0, 64) == data


def test_unmap_parameter_list_checks() -> None:
    d, vol = disk()
    ok(run(d, cdb10(0x2A, 0, 1), pattern(1)))
    params = unmap_list((0, 1))
    expect(run(d, unmap_cdb(24), params[:20]), 5, 0x1A, 0)  # shorter than announced
    expect(run(d, unmap_cdb(6), params[:6]), 5, 0x1A, 0)  # below the header
    bad = bytearray(params)
    bad[2:4] = (32).to_bytes(2, "big")  # descriptors beyond the list
    expect(run(d, unmap_cdb(24), bytes(bad)), 5, 0x1A, 0)
    expect(run(d, bytes([0x42, 1]) + bytes(5) + bytes([0, 24, 0]), params), 5, 0x24, 0,
           field=(1, 0))  # ANCHOR
    many = unmap_list(*[(i, 1) for i in range(257)])
    assert sense_of(run(d, unmap_cdb(len(many)), many)) == (5, 0x26, 0)
    assert vol.read(0, 1) == pattern(1)


# ---- GET LBA STATUS -----------------------------------------------------------------------------

def test_get_lba_status_byte_exact_and_clipped_to_the_asked_lba() -> None:
    d, _ = disk()
    ok(run(d, cdb10(0x2A, 16, 16), pattern(16)))  # page 1 mapped
    data = ok(run(d, glbas_cdb(20)))
    want = struct.pack(">I4x", 4 + 32) + struct.pack(">QIB3x", 20, 12, 0)
    want += struct.pack(">QIB3x", 32, N - 32, 1)
    assert data == want
    assert ok(run(d, glbas_cdb(20, alloc=24))) == want[:24]
    assert ok(run(d, glbas_cdb(N - 1))) == struct.pack(">I4xQIB3x", 20, N - 1, 1, 1)


def test_get_lba_status_out_of_range() -> None:
    d, _ = disk()
    for lba in (N, N + 1, 2**63, 2**64 - 1):
        expect(run(d, glbas_cdb(lba)), 5, 0x21, 0)


# ---- COMPARE AND WRITE -------------------------------------------------------------------------

def test_compare_and_write_success() -> None:
    d, vol = disk()
    old, new = pattern(2, seed=1), pattern(2, seed=2)
    ok(run(d, cdb16(0x8A, 30, 2), old))
    ok(run(d, caw_cdb(30, 2, 0x18), old + new))  # DPO FUA accepted
    assert vol.read(30, 2) == new
    assert vol.flushes == 1  # FUA made it durable


def test_compare_and_write_miscompare_reports_the_offset() -> None:
    d, vol = disk()
    old = pattern(2, seed=1)
    ok(run(d, cdb16(0x8A, 30, 2), old))
    verify = bytearray(old)
    verify[BS + 5] ^= 0x01
    expect(run(d, caw_cdb(30, 2), bytes(verify) + pattern(2, seed=7)), 0xE, 0x1D, 0,
           info=BS + 5)
    assert vol.read(30, 2) == old
    expect(run(d, caw_cdb(500, 1), pattern(1) + pattern(1)), 0xE, 0x1D, 0, info=0)


def test_compare_and_write_limits_and_data_out() -> None:
    d, vol = disk()
    expect(run(d, caw_cdb(0, 17), bytes(34 * BS)), 5, 0x24, 0, field=(13, 7))
    expect(run(d, caw_cdb(0, 1), bytes(4 * BS)), 5, 0x0E, 0x03)
    expect(run(d, caw_cdb(0, 3), bytes(4 * BS)), 5, 0x0E, 0x03)
    expect(run(d, caw_cdb(0, 1, 0x20), bytes(2 * BS)), 5, 0x24, 0, field=(1, 7))
    ok(run(d, caw_cdb(0, 0)))
    assert not vol.pages


# ---- the one mapping of volume errors ------------------------------------------------------

@pytest.mark.parametrize(("error", "sense"), [
    (OutOfRange("x"), (5, 0x21, 0)),
    (WriteProtected("x"), (7, 0x27, 0)),
    (MediumCorrupt("x"), (3, 0x11, 0)),
    (BackendFailure("x"), (4, 0x44, 0)),
    (Backpressure("x"), (2, 0x04, 0x07)),
    (ShrinkRefused("x"), (4, 0x44, 0)),  # not expected on the data path: a hardware error
    (VolumeError("x"), (4, 0x44, 0)),
])
@pytest.mark.parametrize("command", ["read", "write", "unmap", "caw", "ws", "sync", "glbas"])
def test_volume_errors_map_to_sense(error: VolumeError, sense: tuple[int, int, int],
                                    command: str) -> None:
    d, vol = disk()
    cdb, data = {
        "read": (cdb10(0x28, 0, 1), None),
        "write": (cdb10(0x2A, 0, 1), pattern(1)),
        "unmap": (unmap_cdb(24), unmap_list((0, 1))),
        "caw": (caw_cdb(0, 1), bytes(2 * BS)),
        "ws": (cdb16(0x93, 0, 4, 0x08), bytes(BS)),
        "sync": (cdb10(0x35, 0, 0), None),
        "glbas": (glbas_cdb(0), None),
    }[command]
    vol.fail_next = error
    expect(run(d, cdb, data), *sense)


def test_512_byte_volume_round_trip() -> None:
    vol = MemoryVolume("small", 64, block_size=512, page_size=4096)
    d = ThinDisk(vol)
    d.execute(bytes([0x03, 0, 0, 0, 18, 0]), None)
    ok(run(d, cdb10(0x2A, 3, 2), b"\x5a" * 1024))
    assert ok(run(d, cdb10(0x28, 3, 2))) == b"\x5a" * 1024

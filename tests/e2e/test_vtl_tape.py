"""The tape drives through the real kernel: st/mt-st positioning, partitions, variable
records and tar over iSCSI (sg3-utils, dedup and two drives: test_vtl_tape_tools.py).

One library (thurvtld + an iSCSI session) serves the whole module; each test creates its
own cartridges with `thurvtl cartridge create`, loads them with `mtx load` and leaves the
drives empty again (the `empty_drives` fixture unloads whatever a failed test left).

Positions are checked from both ends (tests/e2e/tape_kit.py).

st behaviours these tests rely on (Linux st, BSD semantics, the default):
- closing a non-rewinding device after writing writes one filemark;
- closing after reading leaves the position where the reads stopped;
- SPACE that meets a filemark (fsr into a filemark, bsr into one) fails with EIO and the
  position is past that filemark in the direction of motion;
- the first READ at end of data right after a filemark returns 0 bytes, every following
  one fails with EIO (the drive says BLANK CHECK both times).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.e2e import kit
from tests.e2e.tape_kit import (
    KiB,
    Library,
    at,
    dd_read,
    dd_write,
    leave_drives_empty,
    make_tree,
    mt,
    payload,
    serve_library,
    status,
    tar_size,
    tell,
    tree_listing,
    write_file,
)


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    yield from serve_library(tmp_path_factory)


@pytest.fixture(autouse=True)
def empty_drives(lib: Library) -> Iterator[None]:
    yield from leave_drives_empty(lib)


# --- tests -------------------------------------------------------------------------------


def test_mt_st_positioning_variable_and_fixed(lib: Library) -> None:
    node = lib.load("MTS001L8", 0)
    st = at(node, file=0, block=0, obj=0)
    assert "BOT" in st.flags and st.block_size == 0 and st.density == "0x5e"
    mt(node, "rewind")
    at(node, file=0, block=0, obj=0)

    # Three files: 3 records of 10000 bytes, 2 of 20000, 1 of 30000 (each dd's close
    # writes the filemark), then `weof` adds an empty fourth file. Objects:
    # 0 1 2 rec | 3 FM | 4 5 rec | 6 FM | 7 rec | 8 FM | 9 FM | end of data at 10.
    sizes = (10000, 20000, 30000)
    datas = [payload(n, 30000 + 10000 * (n == 1)) for n in range(3)]
    recs = [d[i : i + s] for d, s in zip(datas, sizes, strict=True)
            for i in range(0, len(d), s)]
    for n, (data, size) in enumerate(zip(datas, sizes, strict=True)):
        dd_write(node, write_file(lib.work / f"file{n}", data), size)
        at(node, file=n + 1, block=0, obj=(4, 7, 9)[n])
    mt(node, "weof")
    assert "EOF" in at(node, file=4, block=0, obj=10).flags
    mt(node, "rewind")
    assert "BOT" in at(node, file=0, block=0, obj=0).flags

    # fsf / bsf: backward spacing stops on the beginning-of-tape side of the filemark,
    # where st no longer knows the block number.
    mt(node, "fsf 2")
    at(node, file=2, block=0, obj=7)
    out = lib.work / "out"
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == recs[5]
    at(node, file=2, block=1, obj=8)
    mt(node, "bsf 1")
    at(node, file=1, block=-1, obj=6)
    mt(node, "fsf 1")
    at(node, file=2, block=0, obj=7)
    mt(node, "bsf 2")
    at(node, file=0, block=-1, obj=3)
    mt(node, "bsr 1")
    at(node, file=0, block=-1, obj=2)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == recs[2]
    assert tell(node) == 3

    # fsr / bsr, and spacing into a filemark or past the beginning fails (EIO) with the
    # position just past that filemark.
    mt(node, "rewind")
    mt(node, "fsr 2")
    at(node, file=0, block=2, obj=2)
    mt(node, "bsr 1")
    at(node, file=0, block=1, obj=1)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == recs[1]
    at(node, file=0, block=2, obj=2)
    mt(node, "fsr 2", fails=True)  # record 2, then the filemark at 3
    at(node, file=1, block=0, obj=4)
    mt(node, "bsr 1", fails=True)  # straight into the filemark at 3
    at(node, file=0, block=-1, obj=3)
    mt(node, "rewind")
    mt(node, "bsr 1", fails=True)  # beginning of partition
    at(node, file=0, block=0, obj=0)

    # eod: st counts the filemarks it spaced over; nothing moves past end of data.
    mt(node, "eod")
    assert "EOD" in at(node, file=4, block=-1, obj=10).flags
    mt(node, "fsf 1", fails=True)
    mt(node, "fsr 1", fails=True)
    assert tell(node) == 10

    # seek / tell: logical object numbers, records and filemarks alike.
    mt(node, "seek 4")
    at(node, file=-1, block=-1, obj=4)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == recs[3]
    assert tell(node) == 5
    mt(node, "seek 0")
    assert "BOT" in at(node, file=0, block=0, obj=0).flags
    mt(node, "seek 8")
    dd_read(node, out, 64 * KiB, 1)  # the filemark: 0 bytes, position past it
    assert out.read_bytes() == b""
    assert tell(node) == 9

    # erase at object 7: the third file and both filemarks after it are gone.
    mt(node, "seek 7")
    mt(node, "erase")
    assert tell(node) == 7
    mt(node, "rewind")
    mt(node, "eod")
    at(node, file=2, block=-1, obj=7)
    mt(node, "rewind")
    mt(node, "fsf 3", fails=True)
    assert tell(node) == 7

    # Fixed-block mode: setblk 65536, ten 64 KiB blocks appended at end of data.
    mt(node, "rewind")
    mt(node, "setblk 65536")
    st = at(node, file=0, block=0, obj=0)
    assert st.block_size == 65536
    mt(node, "eod")
    fixed = write_file(lib.work / "fixed", payload(7, 10 * 64 * KiB))
    dd_write(node, fixed, 64 * KiB)
    at(node, file=3, block=0, obj=18)
    mt(node, "rewind")
    mt(node, "fsf 2")
    mt(node, "fsr 3")
    at(node, file=2, block=3, obj=10)
    mt(node, "bsr 1")
    at(node, file=2, block=2, obj=9)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == fixed.read_bytes()[2 * 64 * KiB : 3 * 64 * KiB]
    at(node, file=2, block=3, obj=10)
    mt(node, "rewind")
    mt(node, "fsf 2")
    dd_read(node, out, 128 * KiB)  # two blocks per read, up to the filemark
    assert out.read_bytes() == fixed.read_bytes()
    at(node, file=3, block=0, obj=18)

    # Back to variable mode: a fixed block is a 64 KiB record like any other.
    mt(node, "setblk 0")
    mt(node, "rewind")
    assert status(node).block_size == 0
    mt(node, "fsf 2")
    dd_read(node, out, 256 * KiB, 1)
    assert out.read_bytes() == fixed.read_bytes()[: 64 * KiB]
    mt(node, "rewind")
    dd_read(node, out, 64 * KiB)  # the whole first file, record by record
    assert out.read_bytes() == datas[0]
    at(node, file=1, block=0, obj=4)


def partition_capacities(sg: str) -> dict[int, int]:
    """Native capacity per partition (MB) from the volume statistics log page (17h)."""
    out = kit.sh(f"sg_logs -p 0x17 {sg}").stdout
    section = out.split("Native capacity partitions:", 1)[1].split("Used native", 1)[0]
    return {int(p): int(mb) for p, mb in re.findall(
        r"partition number: (\d+), partition record data counter \[MB\]: (\d+)", section)}


def test_mt_st_partitions(lib: Library) -> None:
    node, sg = lib.load("MTP001L8", 0), lib.sg(0)
    mt(node, "stsetoptions can-partitions")  # st refuses partition ioctls without it
    assert partition_capacities(sg) == {0: 12_000_000}

    # Partition 1 of 1000 MB (st sends it in GB units: our page says PSUM=11b).
    mt(node, "mkpartition 1000")
    at(node, file=0, block=0, partition=0, obj=0)
    assert partition_capacities(sg) == {0: 11_999_000, 1: 1000}
    p0 = write_file(lib.work / "p0", payload(11, 16000))
    dd_write(node, p0, 8000)
    at(node, file=1, block=0, partition=0, obj=3)
    mt(node, "setpartition 1")
    at(node, file=0, block=0, partition=1, obj=0)
    p1 = write_file(lib.work / "p1", payload(12, 5000))
    dd_write(node, p1, 5000)
    at(node, file=1, block=0, partition=1, obj=2)

    # partseek PARTITION BLOCK: LOCATE with the change-partition bit.
    out = lib.work / "out"
    mt(node, "partseek 0 1")
    at(node, file=-1, block=-1, partition=0, obj=1)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == p0.read_bytes()[8000:]
    mt(node, "partseek 1 0")
    at(node, file=0, block=0, partition=1, obj=0)
    dd_read(node, out, 64 * KiB, 1)
    assert out.read_bytes() == p1.read_bytes()
    at(node, file=0, block=1, partition=1, obj=1)
    mt(node, "eod")
    at(node, file=1, block=-1, partition=1, obj=2)
    mt(node, "setpartition 0")
    assert status(node).partition == 0
    mt(node, "rewind")  # REWIND goes to the beginning of partition 0
    at(node, file=0, block=0, partition=0, obj=0)
    dd_read(node, out, 64 * KiB)
    assert out.read_bytes() == p0.read_bytes()

    # mkpartition 1: two partitions the drive sizes itself (halves); a fresh layout.
    mt(node, "rewind")
    mt(node, "mkpartition 1")
    at(node, file=0, block=0, partition=0, obj=0)
    assert partition_capacities(sg) == {0: 6_000_000, 1: 6_000_000}
    mt(node, "eod")
    assert tell(node) == 0
    mt(node, "partseek 1 0")
    mt(node, "eod")
    at(node, file=0, block=-1, partition=1, obj=0)

    # mkpartition 0: back to one partition; partition 1 no longer exists.
    mt(node, "setpartition 0")
    mt(node, "rewind")
    mt(node, "mkpartition 0")
    at(node, file=0, block=0, partition=0, obj=0)
    assert partition_capacities(sg) == {0: 12_000_000}
    proc = kit.sh(f"mt-st -f {node} setpartition 1", check=False)
    assert proc.returncode != 0 and "Invalid argument" in proc.stderr
    mt(node, "stclearoptions can-partitions")


def test_variable_records_filemark_and_eod(lib: Library) -> None:
    node, sg = lib.load("VAR001L8", 0), lib.sg(0)
    record = write_file(lib.work / "r64k", payload(40, 64 * KiB))
    kit.sh(f"dd if={record} of={node} bs=64k count=1")  # close: one filemark
    at(node, file=1, block=0, obj=2)
    mt(node, "weof")
    at(node, file=2, block=0, obj=3)
    mt(node, "rewind")

    out = lib.work / "out"
    proc = dd_read(node, out, 256 * KiB, 1)
    assert out.read_bytes() == record.read_bytes()  # exactly 65536 bytes
    assert "0+1 records in" in proc.stderr
    at(node, file=0, block=1, obj=1)
    for n in (1, 2):  # the filemark from dd's close, then the one from weof
        dd_read(node, out, 256 * KiB, 1)
        assert out.stat().st_size == 0
        at(node, file=n, block=0, obj=n + 1)

    # End of data: st returns 0 once for the first BLANK CHECK after a filemark, then
    # EIO for every further read; never data, and the position stays.
    first = dd_read(node, out, 256 * KiB, 1)
    assert out.stat().st_size == 0 and "0+0 records in" in first.stderr
    for _ in range(2):
        again = dd_read(node, out, 256 * KiB, 1, check=False)
        assert again.returncode != 0 and "Input/output error" in again.stderr
        assert out.stat().st_size == 0
    assert tell(node) == 3
    # The drive itself says BLANK CHECK / END-OF-DATA DETECTED to a raw READ(6).
    raw = kit.sh(f"sg_raw -r 256k {sg} 08 00 04 00 00 00", check=False)
    assert raw.returncode != 0
    assert "blank check" in (raw.stdout + raw.stderr).lower()
    assert "end-of-data detected" in (raw.stdout + raw.stderr).lower()

    # A record longer than the read: st refuses with ENOMEM, the record is passed over.
    mt(node, "rewind")
    proc = dd_read(node, out, 32 * KiB, 1, check=False)
    assert proc.returncode != 0 and "Cannot allocate memory" in proc.stderr
    assert tell(node) == 1
    # A record shorter than the read comes back whole (ILI, short transfer).
    mt(node, "rewind")
    dd_read(node, out, 1024 * KiB, 1)
    assert out.stat().st_size == 64 * KiB




def test_tar_two_archives_blocking_128_and_2048(lib: Library) -> None:
    tree1 = make_tree(lib.work / "tree1", seed=1)
    tree2 = make_tree(lib.work / "tree2", seed=2)
    kit.sh(f"du -sh {tree1} {tree2}")
    records1 = tar_size(tree1, 128) // (128 * 512)
    records2 = tar_size(tree2, 2048) // (2048 * 512)
    node = lib.load("TAR001L8", 0)

    kit.sh(f"tar -b 128 -cf {node} -C {tree1} .")
    at(node, file=1, block=0, obj=records1 + 1)
    mt(node, "rewind")
    mt(node, "eod")  # append after end of data
    at(node, file=1, block=-1, obj=records1 + 1)
    kit.sh(f"tar -b 2048 -cf {node} -C {tree2} .")
    at(node, file=2, block=0, obj=records1 + records2 + 2)

    # List both, then extract both; `fsf 1` skips from the first to the second.
    mt(node, "rewind")
    listed1 = set(kit.sh(f"tar -b 128 -tf {node}").stdout.split("\n")) - {""}
    assert listed1 == tree_listing(tree1)
    mt(node, "fsf 1")
    at(node, file=1, block=0, obj=records1 + 1)
    listed2 = set(kit.sh(f"tar -b 2048 -tf {node}").stdout.split("\n")) - {""}
    assert listed2 == tree_listing(tree2)

    mt(node, "rewind")
    out1, out2 = lib.work / "out1", lib.work / "out2"
    out1.mkdir()
    out2.mkdir()
    kit.sh(f"tar -b 128 -xf {node} -C {out1}")
    mt(node, "fsf 1")
    kit.sh(f"tar -b 2048 -xf {node} -C {out2}")
    kit.sh(f"diff -r --no-dereference {tree1} {out1}")
    kit.sh(f"diff -r --no-dereference {tree2} {out2}")
    mt(node, "rewind")
    mt(node, "eod")
    at(node, file=2, block=-1, obj=records1 + records2 + 2)

"""The tape drives through the real kernel, continued: sg3-utils on drive and changer,
dedup of the same tree on two cartridges, two drives writing at once then kill -9.

One library (thurvtld + an iSCSI session, tests/e2e/tape_kit.py) serves the module; each
test creates its own cartridges and leaves the drives empty.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e import kit
from tests.e2e.tape_kit import (
    IQN,
    KiB,
    Library,
    MiB,
    at,
    dd_read,
    dd_write,
    leave_drives_empty,
    make_tree,
    mt,
    payload,
    serve_library,
    sha256,
    tar_size,
    tell,
    wait_online,
    write_file,
)


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    yield from serve_library(tmp_path_factory)


@pytest.fixture(autouse=True)
def empty_drives(lib: Library) -> Iterator[None]:
    yield from leave_drives_empty(lib)


# --- tests -------------------------------------------------------------------------------


def log_params(sg: str, page: int) -> dict[int, bytes]:
    """A log page's parameters, from `sg_logs -r` (the raw page)."""
    # LOG SENSE, PC=01b (cumulative values), 4 KiB allocation; -b: data-in to stdout.
    raw = raw_out(["sg_raw", "-b", "-r", "4096", sg, "4d", "00", f"{0x40 | page:02x}",
                   "00", "00", "00", "00", "10", "00", "00"])
    assert raw[0] & 0x3F == page
    end = 4 + int.from_bytes(raw[2:4], "big")
    params, off = {}, 4
    while off < end:
        code, length = int.from_bytes(raw[off : off + 2], "big"), raw[off + 3]
        params[code] = raw[off + 4 : off + 4 + length]
        off += 4 + length
    return params


def raw_out(argv: list[str]) -> bytes:
    """stdout of a command that writes binary (sg3-utils' -r)."""
    print(f"$ {' '.join(argv)}", flush=True)
    return subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout


def opcodes(sg: str) -> set[int]:
    out = kit.sh(f"sg_opcodes {sg}").stdout
    return {int(m.group(1), 16) for m in re.finditer(r"^ ([0-9a-f]{2}) ", out, re.M)}


SSC_OPCODES = {0x00, 0x01, 0x03, 0x04, 0x05, 0x08, 0x0A, 0x0B, 0x10, 0x11, 0x12, 0x13, 0x15,
               0x19, 0x1A, 0x1B, 0x1E, 0x2B, 0x34, 0x44, 0x4C, 0x4D, 0x55, 0x5A, 0x80, 0x82,
               0x8C, 0x8D, 0x91, 0x92, 0xA2, 0xA3, 0xB5}
SMC_OPCODES = {0x00, 0x03, 0x07, 0x12, 0x15, 0x1A, 0x1E, 0x2B, 0x37, 0x4C, 0x4D, 0x55, 0x5A,
               0xA3, 0xA5, 0xA6, 0xB8}


def test_sg3_utils_on_drive_and_changer(lib: Library) -> None:
    info = json.loads(lib.daemon.cli("library info --json").stdout)
    serial0 = next(d["serial"] for d in info["drives"] if d["index"] == 0)
    node, sg, ch = lib.load("SGU001L8", 0), lib.sg(0), lib.changer_sg
    written_before = int.from_bytes(log_params(sg, 0x0C)[0x0000], "big")
    data = write_file(lib.work / "4m", payload(50, 4 * MiB))
    dd_write(node, data, 1 * MiB)

    # INQUIRY and VPD.
    out = kit.sh(f"sg_inq {sg}").stdout
    assert "Vendor identification: THUR" in out
    assert "Product identification: Ultrium 8-SCSI" in out
    assert "Peripheral device type: tape" in out and "RMB=1" in out
    out = kit.sh(f"sg_inq {ch}").stdout
    assert "Peripheral device type: medium changer" in out
    assert "Product identification: VTL" in out
    pages = raw_out(["sg_vpd", "--page=0x00", "-r", sg])
    assert {0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2} <= set(pages[4 : 4 + pages[3]]), pages
    assert f"Product serial number: {serial0}" in kit.sh(f"sg_vpd -p 0x80 {sg}").stdout
    ids = kit.sh(f"sg_vpd -p 0x83 {sg}").stdout
    assert "designator type: NAA" in ids and serial0 in ids
    naa_drive = re.search(r"0x6[0-9a-f]{31}", ids)
    b0 = raw_out(["sg_vpd", "--page=0xb0", "-r", sg])
    assert b0[:2] == b"\x01\xb0" and b0[4] & 0x01, f"VPD B0h: no WORM bit: {b0.hex()}"
    assert "Manufacturer-assigned serial number: " + serial0 in kit.sh(
        f"sg_vpd -p 0xb1 {sg}").stdout
    assert "Product serial number: " + info["chassis_serial"] in kit.sh(
        f"sg_vpd -p 0x80 {ch}").stdout
    ids_ch = kit.sh(f"sg_vpd -p 0x83 {ch}").stdout
    naa_ch = re.search(r"0x6[0-9a-f]{31}", ids_ch)
    assert naa_drive and naa_ch and naa_drive.group(0) != naa_ch.group(0)

    # LOG SENSE.
    out = kit.sh(f"sg_logs -a {sg}").stdout
    for name in ("Sequential access device", "Volume statistics", "Tape alert",
                 "Data compression"):
        assert name in out, name
    seq = log_params(sg, 0x0C)
    assert int.from_bytes(seq[0x0000], "big") - written_before == 4 * MiB
    assert int.from_bytes(seq[0x0004], "big") == 4 * MiB // 1_000_000  # BOP to EOD, MB
    out = kit.sh(f"sg_logs -p 0x0c {sg}").stdout
    assert "Native capacity from BOP to EOD: 4 MB" in out
    out = kit.sh(f"sg_logs -p 0x17 {sg}").stdout
    assert "Volume barcode: SGU001L8" in out
    assert "Total native capacity: 12000000 megabytes" in out
    assert "Total used native capacity: 4 megabytes" in out
    alerts = kit.sh(f"sg_logs -p 0x2e {sg}").stdout
    assert "Write protect: 0" in alerts and not re.search(r": [1-9]\d*$", alerts, re.M)
    out = kit.sh(f"sg_logs -a {ch}").stdout
    assert "0x2e" in out

    # MODE SENSE.
    out = kit.sh(f"sg_modes -a {sg}").stdout
    assert "Density code=0x5e" in out
    for name in ("Data Compression", "Device configuration", "Medium Partition",
                 "Informational exceptions"):
        assert f">> {name}" in out, name
    out = kit.sh(f"sg_modes -a {ch}").stdout
    for name in ("Element address assignment", "Transport geometry parameters",
                 "Device capabilities"):
        assert f">> {name}" in out, name

    # READ / WRITE ATTRIBUTE (MAM); the host attribute 0806h stays with the cartridge.
    out = kit.sh(f"sg_read_attr {sg}").stdout
    assert re.search(r"Volume identifier: SGU001L8\s*$", out, re.M)
    assert re.search(r"Medium serial number: SGU001L8\s*$", out, re.M)
    assert "Format density code: 0x5e" in out
    assert "Total MiB written in current/last load: 4" in out
    assert "Barcode" in kit.sh(f"sg_read_attr -s 5 {sg}").stdout
    kit.sh(f"sg_write_attr {sg} 0x0806=SGU001L8")
    barcode = kit.sh(f"sg_read_attr -f 0x0806 {sg}").stdout
    assert re.search(r"Barcode: SGU001L8\s*$", barcode, re.M)
    lib.daemon.cli("changer unload 0")
    slot = json.loads(lib.daemon.cli("cartridge info SGU001L8 --json").stdout)
    kit.sh(f"mtx -f {ch} load {slot['location']['number']} 0")
    wait_online(node)
    barcode = kit.sh(f"sg_read_attr -f 0x0806 {sg}").stdout
    assert re.search(r"Barcode: SGU001L8\s*$", barcode, re.M)
    # The changer answers READ ATTRIBUTE per element (SMC-3): the barcode of the
    # cartridge in that element; the robot element holds none.
    kit.sh(f"sg_read_attr {ch}")
    address = slot["location"]["address"]
    lib.daemon.cli("changer unload 0")
    on_changer = kit.sh(f"sg_read_attr -E {address} -f 0x0806 {ch}").stdout
    assert re.search(r"Barcode: SGU001L8\s*$", on_changer, re.M)
    kit.sh(f"mtx -f {ch} load {slot['location']['number']} 0")
    wait_online(node)

    # REPORT SUPPORTED OPERATION CODES: all-commands and one-command forms.
    missing = SSC_OPCODES - opcodes(sg)
    assert not missing, f"drive does not list {sorted(hex(o) for o in missing)}"
    missing = SMC_OPCODES - opcodes(ch)
    assert not missing, f"changer does not list {sorted(hex(o) for o in missing)}"
    kit.sh(f"sg_opcodes -o 0x34 {sg}")  # READ POSITION
    kit.sh(f"sg_opcodes -o 0xb8 {ch}")  # READ ELEMENT STATUS


def test_same_tree_on_two_cartridges_dedups(lib: Library) -> None:
    tree = make_tree(lib.work / "dup", seed=7, scale=3)
    kit.sh(f"du -sh {tree}")
    node0 = lib.load("DUP001L8", 0)
    node1 = lib.load("DUP002L8", 1)
    before = lib.pool_chunks()
    kit.sh(f"tar -b 128 -cf {node0} -C {tree} .")  # the close's filemark: durable
    first = lib.pool_chunks() - before
    kit.sh(f"tar -b 128 -cf {node1} -C {tree} .")
    second = lib.pool_chunks() - before - first
    print(f"new chunks: first cartridge {first}, second {second}", flush=True)
    assert first >= 6, "the tree should span several chunks"
    assert second <= 0.05 * first
    used = [json.loads(lib.daemon.cli(f"cartridge info {bc} --json").stdout)["used_bytes"]
            for bc in ("DUP001L8", "DUP002L8")]
    assert used[0] == used[1] >= tar_size(tree, 128)
    # The deduplicated copy reads back whole.
    mt(node1, "rewind")
    restored = lib.work / "dup-out"
    restored.mkdir()
    kit.sh(f"tar -b 128 -xf {node1} -C {restored}")
    kit.sh(f"diff -r --no-dereference {tree} {restored}")


def test_two_drives_concurrent_then_kill9_reads_back(lib: Library) -> None:
    nodes = [lib.load("KIL101L8", 0), lib.load("KIL102L8", 1)]
    sources = [write_file(lib.work / "k0", payload(71, 6 * MiB)),
               write_file(lib.work / "k1", payload(72, 5 * MiB))]
    block_sizes = [256 * KiB, 64 * KiB]
    records = [6 * MiB // block_sizes[0], 5 * MiB // block_sizes[1]]
    writers = [subprocess.Popen(["dd", f"if={src}", f"of={node}", f"bs={bs}"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for src, node, bs in zip(sources, nodes, block_sizes, strict=True)]
    for w in writers:
        out, _ = w.communicate(timeout=600)
        print(out, flush=True)
        assert w.returncode == 0
    for node, n in zip(nodes, records, strict=True):
        mt(node, "weof")
        at(node, file=2, block=0, obj=n + 2)

    sessions = kit.session_ids()
    lib.daemon.kill9()
    assert kit.kernel_objects(IQN, "thurvtl")
    lib.daemon.start()
    assert kit.session_ids() == sessions

    out = lib.work / "back"
    for index, (node, src, n) in enumerate(zip(nodes, sources, records, strict=True)):
        # After the gap each drive reports POWER ON/RESET and then MEDIUM MAY HAVE
        # CHANGED: st forgets the position, so rewind first (it may take a retry).
        kit.wait_for(f"{node} rewinds after the restart",
                     lambda node=node: kit.sh(f"mt-st -f {node} rewind",
                                              check=False).returncode == 0, 90)
        at(node, file=0, block=0, obj=0)
        dd_read(node, out, 256 * KiB)
        assert sha256(out) == sha256(src)
        at(node, file=1, block=0, obj=n + 1)
        dd_read(node, out, 256 * KiB)
        assert out.stat().st_size == 0
        at(node, file=2, block=0, obj=n + 2)
        mt(node, "eod")
        assert tell(node) == n + 2
        facts = json.loads(lib.daemon.cli(
            f"cartridge info {('KIL101L8', 'KIL102L8')[index]} --json").stdout)
        assert facts["location"]["element"] == f"drive {index}" and facts["loaded"]

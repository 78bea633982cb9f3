"""The cffi model of linux/target_core_user.h has the kernel's layout."""

import shutil
import subprocess
from pathlib import Path

import pytest

from handlers.tcmu import uapi
from handlers.tcmu.uapi import ffi

HEADER = Path("/usr/include/linux/target_core_user.h")

# (type, field path, offset) straight from DESIGN.md "TCMU UAPI".
OFFSETS = [
    ("struct tcmu_mailbox", ("version",), 0),
    ("struct tcmu_mailbox", ("flags",), 2),
    ("struct tcmu_mailbox", ("cmdr_off",), 4),
    ("struct tcmu_mailbox", ("cmdr_size",), 8),
    ("struct tcmu_mailbox", ("cmd_head",), 12),
    ("struct tcmu_mailbox", ("cmd_tail",), 64),
    ("struct tcmu_cmd_entry_hdr", ("len_op",), 0),
    ("struct tcmu_cmd_entry_hdr", ("cmd_id",), 4),
    ("struct tcmu_cmd_entry_hdr", ("kflags",), 6),
    ("struct tcmu_cmd_entry_hdr", ("uflags",), 7),
    ("struct tcmu_cmd_entry", ("req", "iov_cnt"), 8),
    ("struct tcmu_cmd_entry", ("req", "iov_bidi_cnt"), 12),
    ("struct tcmu_cmd_entry", ("req", "iov_dif_cnt"), 16),
    ("struct tcmu_cmd_entry", ("req", "cdb_off"), 24),
    ("struct tcmu_cmd_entry", ("req", "iov"), 48),
    ("struct tcmu_cmd_entry", ("rsp", "scsi_status"), 8),
    ("struct tcmu_cmd_entry", ("rsp", "read_len"), 12),
    ("struct tcmu_cmd_entry", ("rsp", "sense_buffer"), 16),
    ("struct tcmu_tmr_entry", ("tmr_type",), 8),
    ("struct tcmu_tmr_entry", ("cmd_cnt",), 12),
    ("struct tcmu_tmr_entry", ("cmd_ids",), 32),
    ("struct iovec", ("iov_base",), 0),
    ("struct iovec", ("iov_len",), 8),
]

SIZES = [
    ("struct tcmu_mailbox", 128),  # the kernel's CMDR_OFF
    ("struct tcmu_cmd_entry_hdr", 8),
    ("struct tcmu_cmd_entry", 112),  # minimum CMD entry: room for the response
    ("struct tcmu_tmr_entry", 32),
    ("struct iovec", 16),
]


@pytest.mark.parametrize(("ctype", "path", "offset"), OFFSETS)
def test_field_offsets(ctype: str, path: tuple[str, ...], offset: int) -> None:
    assert ffi.offsetof(ctype, *path) == offset


@pytest.mark.parametrize(("ctype", "size"), SIZES)
def test_struct_sizes(ctype: str, size: int) -> None:
    assert ffi.sizeof(ctype) == size


def test_sense_buffer_is_96_bytes() -> None:
    assert ffi.sizeof(ffi.new("struct tcmu_cmd_entry_rsp *").sense_buffer) == 96
    assert uapi.TCMU_SENSE_BUFFERSIZE == 96


def test_derived_layout_constants() -> None:
    assert uapi.MAILBOX_SIZE == 128
    assert uapi.CMD_ENTRY_SIZE == 112
    assert uapi.IOV_OFFSET == 48
    assert uapi.IOV_SIZE == 16
    assert uapi.TMR_ENTRY_SIZE == uapi.TMR_IDS_OFFSET == 32


def test_constants_match_the_header() -> None:
    assert uapi.TCMU_MAILBOX_VERSION == 2
    assert (uapi.TcmuOp.PAD, uapi.TcmuOp.CMD, uapi.TcmuOp.TMR) == (0, 1, 2)
    assert uapi.TCMU_MAILBOX_FLAG_CAP_OOOC == 1
    assert uapi.TCMU_MAILBOX_FLAG_CAP_READ_LEN == 2
    assert uapi.TCMU_MAILBOX_FLAG_CAP_TMR == 4
    assert uapi.TCMU_MAILBOX_FLAG_CAP_KEEP_BUF == 8
    assert uapi.TCMU_UFLAG_UNKNOWN_OP == 1
    assert uapi.TCMU_UFLAG_READ_LEN == 2
    assert uapi.TCMU_UFLAG_KEEP_BUF == 4
    assert uapi.TCMU_OP_MASK == 7
    assert uapi.TCMU_OP_ALIGN_SIZE == 8
    assert uapi.TcmuTmr.ABORT_TASK == 1
    assert uapi.TcmuTmr.LUN_RESET == 5
    assert uapi.TcmuTmr.LUN_RESET_PRO == 128


def test_len_op_packing() -> None:
    len_op = uapi.make_len_op(4096, uapi.TcmuOp.TMR)
    assert uapi.hdr_get_op(len_op) == uapi.TcmuOp.TMR
    assert uapi.hdr_get_len(len_op) == 4096
    assert uapi.make_len_op(136, uapi.TcmuOp.CMD) == 137


def test_rsp_overlays_req_in_the_same_bytes() -> None:
    buf = bytearray(256)
    entry = ffi.cast("struct tcmu_cmd_entry *", ffi.from_buffer(buf))
    entry.req.iov_cnt = 0xFFFFFFFF
    entry.rsp.scsi_status = 2
    assert entry.req.iov_cnt == 0xFFFFFF02
    entry.req.iov[0].iov_len = 77
    assert buf[56] == 77


@pytest.mark.skipif(
    shutil.which("cc") is None or not HEADER.exists(), reason="needs cc and the UAPI header"
)
def test_offsets_agree_with_the_c_compiler(tmp_path: Path) -> None:
    """Independent check: let the compiler lay out the real header."""
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <linux/target_core_user.h>",
        "int main(void) {",
    ]
    for ctype, path, _ in OFFSETS:
        if ctype == "struct iovec":
            continue
        lines.append(f'printf("%zu\\n", offsetof({ctype}, {".".join(path)}));')
    for ctype, _ in SIZES:
        lines.append(f'printf("%zu\\n", sizeof({ctype}));')
    lines += ["return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-o", str(exe), str(src)], check=True, capture_output=True)
    got = [
        int(x)
        for x in subprocess.run(
            [str(exe)], check=True, capture_output=True, text=True
        ).stdout.split()
    ]
    want = [ffi.offsetof(c, *p) for c, p, _ in OFFSETS if c != "struct iovec"]
    want += [ffi.sizeof(c) for c, _ in SIZES]
    assert got == want

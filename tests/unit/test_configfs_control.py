"""Rendering of the user backstore control string/attributes and APTPL/info parsing."""

from __future__ import annotations

from configfs import UserBackstore, parse_aptpl, render_control_options, render_control_string
from configfs.control import parse_info, render_attributes


def make(**kw: object) -> UserBackstore:
    args: dict[str, object] = {"name": "tape0", "dev_config": "thur/tape0",
                               "size_bytes": 1 << 30, "wwn_serial": "SN0"}
    args.update(kw)
    return UserBackstore(**args)  # type: ignore[arg-type]


def test_control_string_minimal() -> None:
    assert render_control_string(make()) == (
        "dev_config=thur/tape0,dev_size=1073741824,hw_block_size=512,"
        "hw_max_sectors=2048,nl_reply_supported=-1,max_data_area_mb=64")


def test_control_string_with_optional_options() -> None:
    b = make(hw_block_size=4096, hw_max_sectors=2048, max_data_area_mb=256,
             data_pages_per_blk=256, cmd_ring_size_mb=16)
    opts = render_control_options(b)
    assert opts[0] == "dev_config=thur/tape0"  # the kernel needs it before enable
    assert "nl_reply_supported=-1" in opts
    assert opts[-2:] == ["data_pages_per_blk=256", "cmd_ring_size_mb=16"]
    assert render_control_string(b) == ",".join(opts)
    # every option is key=value and none contains the separator
    assert all(o.count("=") == 1 and "," not in o for o in opts)


def test_attributes() -> None:
    assert render_attributes(make(cmd_time_out=14400, qfull_time_out=30,
                                  tmr_notification=False)) == {
        "cmd_time_out": "14400", "qfull_time_out": "30", "tmr_notification": "0"}
    assert render_attributes(make())["tmr_notification"] == "1"


APTPL = """PR_REG_START: 0
initiator_fabric=iSCSI
initiator_node=iqn.1993-08.org.debian:01:aaa
initiator_sid=0x23d000000
sa_res_key=1234
res_holder=1
res_type=06
res_scope=00
res_all_tg_pt=0
mapped_lun=1
target_fabric=iSCSI
target_node=iqn.2026-01.io.thur:vtl
tpgt=1
port_rtpi=1
target_lun=1
PR_REG_END: 0
PR_REG_START: 1
initiator_fabric=iSCSI
initiator_node=iqn.1993-08.org.debian:01:bbb
sa_res_key=99
res_holder=0
PR_REG_END: 1
"""


def test_parse_aptpl() -> None:
    regs = parse_aptpl(APTPL)
    assert len(regs) == 2
    assert regs[0].startswith("initiator_fabric=iSCSI,initiator_node=iqn.1993-08.org.debian")
    assert regs[0].endswith("target_lun=1")
    assert regs[1] == ("initiator_fabric=iSCSI,initiator_node=iqn.1993-08.org.debian:01:bbb,"
                       "sa_res_key=99,res_holder=0")
    assert parse_aptpl("") == []
    assert parse_aptpl("PR_REG_START: 0\n") == []  # truncated file: nothing half-replayed


def test_parse_info() -> None:
    info = ("Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 2048\n"
            "        Config: thur/tape0 Size: 1073741824 MaxDataAreaMB: 64 "
            "DataPagesPerBlk: 1 CmdRingSizeMB: 8\n")
    fields = parse_info(info)
    assert fields["Config"] == "thur/tape0"
    assert fields["Max Queue Depth"] == "128"
    assert fields["Status"] == "ACTIVATED"
    assert fields["CmdRingSizeMB"] == "8"

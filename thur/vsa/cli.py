"""thurvsa: the admin CLI for a running thurvsad, over its admin socket.

Sizes take binary suffixes: 100G is 100 GiB (K, M, G, T, P; KiB/GiB... and a
plain number of bytes work too). A size must be a multiple of the block size
(4096). Tables are for people; --json prints the daemon's reply for scripts.
Exit status: 0 done, 1 the daemon is down or refused (one line on stderr says
why), 2 bad usage.

`system audit tail|verify` reads the audit log, through the daemon or, when it is
not running, from <data_dir>/audit (thur/audit_cli.py); verify exits 0 valid,
1 broken, 2 unreadable.

`volume delete` is refused while the volume is exported and an iSCSI session is
logged in to the target or an NVMe/TCP host is connected; `--force` deletes it
anyway (the initiators' I/O to it fails, and the data is gone).

`system stats|cloud check|gc` are the same as thurvtl's (thur/system_cli.py);
`config defaults|check` print the config reference or check a file (no daemon
needed); `completion bash|zsh` prints a shell completion script.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from thur import audit_cli
from thur.admin import call
from thur.cli_common import (
    Outcome,
    base_parser,
    binary_size,
    fields,
    json_parent,
    run_main,
    table,
)
from thur.cli_nouns import SHARED, add_shared, run_shared
from thur.vsa.config import load_vsa_config

DEFAULT_SOCKET = Path(os.environ.get("THURVSA_SOCKET", "/run/thurvsa/admin.sock"))
PRODUCT = audit_cli.Product("thurvsa", Path("/etc/thurvsa/thurvsa.yaml"), load_vsa_config)
size = binary_size  # disk sizes are given in binary units (2.00 GiB)
__all__ = ["build_parser", "main", "parse_size", "size", "table"]
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)


# ---- formatting ---------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """'100G' -> 100 GiB in bytes; argparse type (ArgumentTypeError on bad input)."""
    m = SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: use a number with an optional K, M, G, T or P suffix "
            "(binary: 1G = 1024^3 bytes)"
        )
    value = float(m.group(1)) * UNITS[m.group(2).upper()]
    if value != int(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: a positive whole byte count")
    return int(value)


def format_volumes(vols: list[dict[str, Any]]) -> str:
    if not vols:
        return "no volumes"
    rows = [
        (v["name"], v["lun"], size(v["size"]), size(v["mapped_bytes"]),
         "yes" if v["exported"] else "no")
        for v in vols
    ]
    return table(("NAME", "LUN", "SIZE", "USED", "EXPORTED"), rows)


def format_volume(v: dict[str, Any]) -> str:
    flags = [n.replace("_", "-") for n in ("write_protected", "fence_waits_for_upload")
             if v.get(n)]
    rows = [
        ("Name", v["name"]),
        ("LUN", "-" if v["lun"] is None else v["lun"]),
        ("Size", f"{size(v['size'])} ({v['size']} bytes)"),
        ("Used", f"{size(v['mapped_bytes'])} ({v['mapped_bytes']} bytes)"),
        ("Block size", v["block_size"]),
        ("Page size", v["page_size"]),
        ("Serial", v["serial"]),
        ("Exported", "yes" if v["exported"] else "no"),
        ("Flags", ", ".join(flags) or "-"),
        ("Replication", "pending" if v.get("replication_pending") else "up to date"),
    ]
    return fields(rows)


def format_info(info: dict[str, Any]) -> str:
    sessions = info.get("sessions")
    rows: list[tuple[str, object]] = []
    if info.get("target_iqn"):
        rows += [("Target", info["target_iqn"]), ("Portals", ", ".join(info["portals"]))]
    if info.get("subsystem_nqn"):
        rows += [("NVMe subsystem", info["subsystem_nqn"]),
                 ("NVMe/TCP on", ", ".join(info.get("nvme_listen", [])))]
    rows += [
        ("Sessions", "unknown" if sessions is None else sessions),
        ("Volumes", len(info["volumes"])),
    ]
    for v in info["volumes"]:
        state = "serving" if v["serving"] else "not serving"
        ns = f", nsid {v['nsid']}" if v.get("nsid") is not None else ""
        rows.append((f"  LUN {v['lun']}", f"{v['name']} ({v['backstore']}{ns}, {state})"))
    return fields(rows)


# ---- commands -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser, sub = base_parser("thurvsa", __doc__, DEFAULT_SOCKET, "THURVSA_SOCKET")
    json_flag = json_parent()
    sub.add_parser("ping", help="check that the daemon answers", parents=[json_flag])
    sub.add_parser("info", help="the target, its portals and LUNs", parents=[json_flag])

    volume = sub.add_parser("volume", help="create, inspect, resize and delete volumes")
    vsub = volume.add_subparsers(dest="verb", required=True)
    create = vsub.add_parser("create", help="create a thin volume and export it",
                             parents=[json_flag])
    create.add_argument("name", help="1-63 letters, digits, '_', '.', '-'")
    create.add_argument("--size", type=parse_size, required=True, help="e.g. 100G")
    create.add_argument("--lun", type=int, metavar="N",
                        help="LUN to export it as (default: the lowest free one)")
    vsub.add_parser("list", help="every volume: LUN, size, bytes used", parents=[json_flag])
    info = vsub.add_parser("info", help="one volume in detail", parents=[json_flag])
    info.add_argument("name")
    resize = vsub.add_parser("resize", help="grow (or shrink an unallocated tail)",
                             parents=[json_flag])
    resize.add_argument("name")
    resize.add_argument("--size", type=parse_size, required=True, help="the new size")
    delete = vsub.add_parser("delete", help="delete a volume and its data",
                             parents=[json_flag])
    delete.add_argument("name")
    delete.add_argument("--force", action="store_true",
                        help="even while initiators are logged in (their I/O to it fails)")
    add_shared(sub, json_flag, PRODUCT)
    return parser


def run(args: argparse.Namespace) -> Outcome:
    """Send the request for `args`; return the reply and its human rendering."""
    if args.noun in SHARED:
        return run_shared(args, PRODUCT, build_parser, size)
    sock = args.socket
    if args.noun == "info":
        result = call(sock, "vsa.info")
        return result, format_info(result)
    if args.verb == "create":
        request: dict[str, Any] = {"name": args.name, "size": args.size}
        if args.lun is not None:
            request["lun"] = args.lun
        result = call(sock, "volume.create", request, timeout=120)
        return result, (f"created {result['name']}: {size(result['size'])}, "
                        f"LUN {result['lun']}" + ("" if result["exported"] else " (not exported)"))
    if args.verb == "list":
        result = call(sock, "volume.list")
        return result, format_volumes(result)
    if args.verb == "info":
        result = call(sock, "volume.info", {"name": args.name})
        return result, format_volume(result)
    if args.verb == "resize":
        result = call(sock, "volume.resize", {"name": args.name, "size": args.size}, timeout=120)
        return result, f"resized {result['name']} to {size(result['size'])}"
    result = call(sock, "volume.delete", {"name": args.name, "force": args.force}, timeout=120)
    return result, f"deleted {result['name']}"


def main(argv: list[str] | None = None) -> int:
    return run_main("thurvsa", build_parser().parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())

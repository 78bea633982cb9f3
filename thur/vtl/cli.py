"""thurvtl: the admin CLI for a running thurvtld, over its admin socket.

Numbers are the ones `mtx status` prints: slots are 1-based, and the mail slots
(import/export elements) continue the slot numbering after the storage slots;
drives are 0-based. Tables are for people; --json prints the daemon's reply for
scripts. Exit status: 0 done, 1 the daemon is down or refused (one line on
stderr says why), 2 bad usage.

`system audit tail|verify` reads the audit log, through the daemon or, when it is
not running, from <data_dir>/audit (thur/audit_cli.py); verify exits 0 valid,
1 broken, 2 unreadable.

Elements for `changer move` are named `slot:N` (mtx numbering), `mail:N`,
`drive:N`, or by SMC element address (`0x0402`). `cartridge delete` is refused
while the cartridge is in a drive, and without --force while it holds data.
`iscsi chap` shows the CHAP settings (passwords redacted); they are set in the
config file and take effect on restart. `config defaults|check` print the
config reference or check a file (no daemon needed); `completion bash|zsh`
prints a shell completion script.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from thur import audit_cli
from thur.admin import call
from thur.cli_common import (
    Outcome,
    base_parser,
    decimal_size,
    fields,
    json_parent,
    run_main,
    table,
    yes_no,
)
from thur.cli_nouns import SHARED, add_shared, run_shared
from thur.config import load_vtl_config

DEFAULT_SOCKET = Path(os.environ.get("THURVTL_SOCKET", "/run/thurvtl/admin.sock"))
PRODUCT = audit_cli.Product("thurvtl", Path("/etc/thurvtl/thurvtl.yaml"), load_vtl_config)
size = decimal_size  # tape capacities are quoted in decimal units (LTO-8: 12 TB)
__all__ = ["build_parser", "main", "size", "table"]


# ---- formatting ---------------------------------------------------------------------------


def _where(loc: dict[str, Any] | None) -> str:
    return loc["element"] if loc else "outside the library"


def format_library(info: dict[str, Any]) -> str:
    rows = [
        ("Target", info["target_iqn"]),
        ("Chassis serial", info["chassis_serial"]),
        ("Slots", info["num_slots"]),
        ("Mail slots", info["num_mail_slots"]),
        ("Drives", info["num_drives"]),
    ]
    for drive in info["drives"]:
        rows.append((f"  drive {drive['index']}", f"LUN {drive['lun']}  serial {drive['serial']}"))
    return fields(rows)


def format_cartridges(carts: list[dict[str, Any]]) -> str:
    if not carts:
        return "no cartridges"
    rows = []
    for c in carts:
        kind = "cleaning" if c["cleaning"] else ("WORM" if c["worm"] else "data")
        rows.append((c["barcode"], _where(c["location"]), kind, size(c["used_bytes"])))
    return table(("BARCODE", "LOCATION", "TYPE", "USED"), rows)


def format_cartridge(c: dict[str, Any]) -> str:
    where = _where(c["location"])
    if c["location"]:
        where += f" (element {c['location']['address']:#06x})"
        if c["location"]["type"] == "drive":
            where += ", loaded" if c["loaded"] else ", not loaded"
    flags = [name for name in ("worm", "cleaning", "write_protected") if c.get(name)]
    local = c["local_only_bytes"]
    rows = [
        ("Barcode", c["barcode"]),
        ("Location", where),
        ("Came from", _where(c["source"]) if c["source"] else "-"),
        ("Flags", ", ".join(f.replace("_", "-") for f in flags) or "-"),
        ("Capacity", size(c["capacity_bytes"])),
        ("Used", size(c["used_bytes"])),
        ("Local-only", "unknown (storage does not report it)" if local is None else size(local)),
        ("Load count", "-" if c["load_count"] is None else c["load_count"]),
    ]
    return fields(rows)


def format_inventory(inv: dict[str, Any]) -> str:
    type_names = {"transport": "robot", "drive": "drive", "slot": "slot", "mail": "mail slot"}
    rows = []
    for e in inv["elements"]:
        status = "full" if e["full"] else "empty"
        if e["imported"]:
            status += " (imported)"
        rows.append((e["element"], f"{e['address']:#06x}", type_names.get(e["type"], e["type"]),
                     status, e["barcode"], e["source"]))
    out = table(("ELEMENT", "ADDRESS", "TYPE", "STATUS", "BARCODE", "FROM"), rows)
    if inv.get("prevent_removal"):
        out += "\nthe changer is locked by an initiator (PREVENT MEDIUM REMOVAL): no exports"
    return out


def format_move(result: dict[str, Any]) -> str:
    return f"{result['barcode']}: {result['from']['element']} -> {result['to']['element']}"


def format_bounds(bounds: dict[str, Any]) -> str:
    rows = []
    for key, b in bounds.items():
        blocker = b["blocker"]
        rows.append((key, b["current"], b["min"], b["max_same_addresses"], b["max"],
                     f"{blocker['barcode']} in {blocker['element']}" if blocker else None))
    out = table(("KEY", "NOW", "MIN", "MAX (SAME ADDRESSES)", "MAX", "BLOCKS SHRINKING"), rows)
    return out + ("\nchange a count in the config file and restart thurvtld; above "
                  "MAX (SAME ADDRESSES) element addresses change (re-scan the changer)")


def _position(pos: dict[str, Any] | None) -> str:
    if pos is None:
        return "-"
    if "error" in pos:
        return f"unknown ({pos['error']})"
    where = "BOP" if pos["bop"] else ("EOD" if pos["eod"] else "")
    return (f"partition {pos['partition']}, object {pos['object']}, file {pos['file']}"
            + (f" ({where})" if where else ""))


def _encryption(enc: dict[str, Any] | None) -> str:
    if enc is None:
        return "-"
    return "on" if enc["encrypt"] else ("decrypt only" if enc["decrypt"] else "off")


def format_drives(drives: list[dict[str, Any]]) -> str:
    rows = []
    for d in drives:
        state = _encryption(d.get("encryption"))
        block = d.get("block_size")
        rows.append((
            d["element"], d["serial"], d["barcode"],
            ("threaded" if d.get("threaded") else "unthreaded") if d.get("medium") else "empty",
            _position(d.get("position")),
            "-" if block is None else ("variable" if block == 0 else block),
            yes_no(d.get("compression")), state, yes_no(d.get("write_protected")),
        ))
    return table(("DRIVE", "SERIAL", "BARCODE", "MEDIUM", "POSITION", "BLOCK", "COMPRESS",
                  "ENCRYPT", "WP"), rows)


def format_drive(d: dict[str, Any]) -> str:
    stats = d.get("stats") or {}
    rows: list[tuple[str, object]] = [
        ("Drive", f"{d['element']} (element {d['address']:#06x})"),
        ("Serial", d["serial"]),
        ("Cartridge", d["barcode"] or "-"),
        ("Position", _position(d.get("position"))),
        ("Block size", "variable" if d.get("block_size") == 0 else d.get("block_size")),
        ("Compression", yes_no(d.get("compression"))),
        ("Encryption", _encryption(d.get("encryption"))),
        ("Write protect", yes_no(d.get("write_protected"))),
        ("Removal locked", yes_no(d.get("prevent_removal"))),
        ("Needs cleaning", yes_no(d.get("cleaning_required"))),
        ("Loads", d.get("load_count")),
    ]
    if stats:
        rows += [
            ("Written", f"{size(stats['host_written'])} in {stats['records_written']} records "
                        f"({size(stats['mount_written'])} this mount)"),
            ("Read", f"{size(stats['host_read'])} in {stats['records_read']} records "
                     f"({size(stats['mount_read'])} this mount)"),
        ]
    return fields(rows)


# ---- commands -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser, sub = base_parser("thurvtl", __doc__, DEFAULT_SOCKET, "THURVTL_SOCKET")
    json_flag = json_parent()
    sub.add_parser("ping", help="check that the daemon answers", parents=[json_flag])

    library = sub.add_parser("library", help="the library as a whole")
    library_sub = library.add_subparsers(dest="verb", required=True)
    library_sub.add_parser("info", help="topology and serial numbers", parents=[json_flag])
    library_sub.add_parser("bounds", parents=[json_flag],
                           help="how far num_slots / num_mail_slots / num_drives may "
                                "shrink or grow")

    cart = sub.add_parser("cartridge", help="create, inspect and delete cartridges")
    cart_sub = cart.add_subparsers(dest="verb", required=True)
    create = cart_sub.add_parser("create", help="create a blank cartridge in a slot",
                                 parents=[json_flag])
    create.add_argument("barcode", help="6-8 upper-case letters/digits, e.g. ABC123L8; "
                                        "CLN... makes a cleaning cartridge")
    where = create.add_mutually_exclusive_group()
    where.add_argument("--slot", type=int, metavar="N",
                       help="slot number as mtx shows it (default: the first empty slot)")
    where.add_argument("--mail-slot", type=int, metavar="N",
                       help="mail slot (import/export element) N, counting from 1")
    create.add_argument("--worm", action="store_true", help="write once, read many")
    cart_sub.add_parser("list", help="every cartridge: where, type, bytes used",
                        parents=[json_flag])
    info = cart_sub.add_parser("info", help="one cartridge in detail", parents=[json_flag])
    info.add_argument("barcode")
    delete = cart_sub.add_parser("delete", parents=[json_flag],
                                 help="delete a cartridge here and in the bucket "
                                      "(refused while in a drive)")
    delete.add_argument("barcode")
    delete.add_argument("--force", action="store_true",
                        help="even when it holds data (it is lost for good)")

    changer = sub.add_parser("changer", help="the robot: inventory and moves")
    changer_sub = changer.add_subparsers(dest="verb", required=True)
    changer_sub.add_parser("inventory", help="every element and what it holds",
                           parents=[json_flag])
    load = changer_sub.add_parser("load", help="move a cartridge from a slot into a drive",
                                  parents=[json_flag])
    load.add_argument("slot", type=int, help="slot number as mtx shows it (1-based)")
    load.add_argument("drive", type=int, help="drive index as mtx shows it (0-based)")
    unload = changer_sub.add_parser("unload", help="move a drive's cartridge to a slot",
                                    parents=[json_flag])
    unload.add_argument("drive", type=int, help="drive index (0-based)")
    unload.add_argument("slot", type=int, nargs="?",
                        help="destination slot (default: the slot it came from)")
    move = changer_sub.add_parser("move", parents=[json_flag],
                                  help="move a cartridge between any two elements")
    move.add_argument("source", metavar="SRC",
                      help="slot:N, mail:N, drive:N or an element address (0x0402)")
    move.add_argument("destination", metavar="DST", help="as SRC")

    drive = sub.add_parser("drive", help="the tape drives")
    drive_sub = drive.add_subparsers(dest="verb", required=True)
    status = drive_sub.add_parser("status", parents=[json_flag],
                                  help="cartridge, position, block size, compression, "
                                       "encryption, counters")
    status.add_argument("drive", type=int, nargs="?",
                        help="one drive in detail (default: a table of all)")

    add_shared(sub, json_flag, PRODUCT)
    return parser


def run_cartridge(args: argparse.Namespace) -> tuple[Any, str]:
    sock = args.socket
    if args.verb == "create":
        request = {"barcode": args.barcode, "worm": args.worm}
        if args.slot is not None:
            request["slot"] = args.slot
        if args.mail_slot is not None:
            request["mail_slot"] = args.mail_slot
        result = call(sock, "cartridge.create", request)
        return result, f"created {result['barcode']} in {_where(result['location'])}"
    if args.verb == "list":
        result = call(sock, "cartridge.list")
        return result, format_cartridges(result)
    if args.verb == "delete":
        result = call(sock, "cartridge.delete", {"barcode": args.barcode, "force": args.force},
                      timeout=300)
        return result, f"deleted {result['barcode']}"
    result = call(sock, "cartridge.info", {"barcode": args.barcode})
    return result, format_cartridge(result)


def run_changer(args: argparse.Namespace) -> tuple[Any, str]:
    sock = args.socket
    if args.verb == "inventory":
        result = call(sock, "changer.inventory")
        return result, format_inventory(result)
    if args.verb == "load":
        result = call(sock, "changer.load", {"slot": args.slot, "drive": args.drive})
    elif args.verb == "move":
        result = call(sock, "changer.move", {"from": args.source, "to": args.destination})
    else:
        request = {"drive": args.drive}
        if args.slot is not None:
            request["slot"] = args.slot
        result = call(sock, "changer.unload", request)
    return result, format_move(result)


def run(args: argparse.Namespace) -> Outcome:
    """Send the request for `args`; return the reply and its human rendering."""
    if args.noun in SHARED:
        return run_shared(args, PRODUCT, build_parser, size)
    sock = args.socket
    if args.noun == "library":
        if args.verb == "bounds":
            result = call(sock, "library.bounds")
            return result, format_bounds(result)
        result = call(sock, "library.info")
        return result, format_library(result)
    if args.noun == "cartridge":
        return run_cartridge(args)
    if args.noun == "drive":
        request = {} if args.drive is None else {"drive": args.drive}
        result = call(sock, "drive.status", request)
        return result, format_drives(result) if args.drive is None else format_drive(result[0])
    return run_changer(args)


def main(argv: list[str] | None = None) -> int:
    return run_main("thurvtl", build_parser().parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())

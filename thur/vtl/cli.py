"""thurvtl: the admin CLI for a running thurvtld, over its admin socket.

Numbers are the ones `mtx status` prints: slots are 1-based, and the mail slots
(import/export elements) continue the slot numbering after the storage slots;
drives are 0-based. Tables are for people; --json prints the daemon's reply for
scripts. Exit status: 0 done, 1 the daemon is down or refused (one line on
stderr says why), 2 bad usage.

`system audit tail|verify` reads the audit log, through the daemon or, when it is
not running, from <data_dir>/audit (thur/audit_cli.py); verify exits 0 valid,
1 broken, 2 unreadable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thur import audit_cli
from thur.admin import AdminError, call
from thur.config import load_vtl_config

DEFAULT_SOCKET = Path(os.environ.get("THURVTL_SOCKET", "/run/thurvtl/admin.sock"))
EXIT_REFUSED = 1
PRODUCT = audit_cli.Product("thurvtl", Path("/etc/thurvtl/thurvtl.yaml"), load_vtl_config)


# ---- formatting ---------------------------------------------------------------------------


def size(n: int | None) -> str:
    """Bytes in decimal units, as tape capacities are quoted (LTO-8: 12 TB)."""
    if n is None:
        return "-"
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


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
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


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
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


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


# ---- commands -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thurvtl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--socket", type=Path, default=DEFAULT_SOCKET,
                        help=f"admin socket path (default {DEFAULT_SOCKET}, or $THURVTL_SOCKET)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    # Also accepted after the subcommand (`thurvtl cartridge list --json`); SUPPRESS keeps
    # a subcommand without it from resetting the global flag.
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                           help="machine-readable output")
    sub = parser.add_subparsers(dest="noun", required=True, metavar="COMMAND")
    sub.add_parser("ping", help="check that the daemon answers", parents=[json_flag])

    library = sub.add_parser("library", help="the library as a whole")
    library_sub = library.add_subparsers(dest="verb", required=True)
    library_sub.add_parser("info", help="topology and serial numbers", parents=[json_flag])

    cart = sub.add_parser("cartridge", help="create and inspect cartridges")
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
    audit_cli.add_parser(sub, json_flag, PRODUCT)
    shell = sub.add_parser("shell", help="interactive shell (targetcli-style, TAB completes); "
                                         "with a command line, runs only that")
    shell.add_argument("line", nargs=argparse.REMAINDER, metavar="COMMAND",
                       help="e.g. `ls /`; without it, commands are read from the terminal "
                            "(or, one per line, from a pipe)")
    return parser


def run(args: argparse.Namespace) -> tuple[Any, str]:
    """Send the request for `args`; return the reply and its human rendering."""
    sock = args.socket
    if args.noun == "ping":
        return call(sock, "ping"), "thurvtld is running"
    if args.noun == "library":
        result = call(sock, "library.info")
        return result, format_library(result)
    if args.noun == "cartridge":
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
        result = call(sock, "cartridge.info", {"barcode": args.barcode})
        return result, format_cartridge(result)
    if args.verb == "inventory":
        result = call(sock, "changer.inventory")
        return result, format_inventory(result)
    if args.verb == "load":
        result = call(sock, "changer.load", {"slot": args.slot, "drive": args.drive})
        return result, format_move(result)
    request = {"drive": args.drive}
    if args.slot is not None:
        request["slot"] = args.slot
    result = call(sock, "changer.unload", request)
    return result, format_move(result)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.noun == "system":
        return audit_cli.run(args, PRODUCT)
    if args.noun == "shell":
        from thur.shell.vtl import main as shell_main  # configshell loads readline: only here

        return shell_main(args.socket, args.line)
    try:
        result, text = run(args)
    except AdminError as exc:
        print(f"thurvtl: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(json.dumps(result, indent=2) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

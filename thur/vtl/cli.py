"""thurvtl: the admin CLI for a running thurvtld, over its admin socket."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from thur.admin import AdminError, call

DEFAULT_SOCKET = Path("/run/thurvtl/admin.sock")


def _print_library(info: dict[str, Any]) -> None:
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
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thurvtl", description=__doc__)
    parser.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help="admin socket path")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="noun", required=True)
    library = sub.add_parser("library", help="the library as a whole")
    library_sub = library.add_subparsers(dest="verb", required=True)
    library_sub.add_parser("info", help="topology and serial numbers")
    sub.add_parser("ping", help="check that the daemon answers")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.noun == "ping":
            result = call(args.socket, "ping")
            print(json.dumps(result) if args.json else "thurvtld is running")
        elif args.noun == "library":
            result = call(args.socket, "library.info")
            if args.json:
                print(json.dumps(result, indent=2))
            else:
                _print_library(result)
    except AdminError as exc:
        print(f"thurvtl: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

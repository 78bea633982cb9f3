"""What thurvtl and thurvsa share: the parser skeleton, tables, sizes, and how they fail.

Every command of both CLIs follows one contract: a table (or a few lines) for
people, `--json` for scripts (the daemon's reply as it is), exit status 0 done,
1 the daemon is down or refused (one line on stderr says why), 2 bad usage
(argparse). A command's runner returns `(reply, text)`, or an exit status when
it prints by itself (audit verify, the completion script).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from thur.admin import AdminError

EXIT_OK = 0
EXIT_REFUSED = 1
Outcome = tuple[Any, str] | int
Runner = Callable[[argparse.Namespace], Outcome]


# ---- formatting ---------------------------------------------------------------------------


def decimal_size(n: int | None) -> str:
    """Bytes in decimal units, as tape capacities are quoted (LTO-8: 12 TB)."""
    if n is None:
        return "-"
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def binary_size(n: int | None) -> str:
    """Bytes in binary units, as disk sizes are given (2.00 GiB)."""
    if n is None:
        return "-"
    for unit, scale in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30),
                        ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; None shows as '-'."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def fields(rows: Sequence[tuple[str, object]]) -> str:
    """'Name   value' lines, the names padded to one width (an `info` verb's output)."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {'-' if value is None else value}".rstrip()
                     for name, value in rows)


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}:1"


def percent(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return "-"
    return f"{100 * part / whole:.1f}%"


def yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


# ---- parser skeleton ----------------------------------------------------------------------


def format_chap(c: dict[str, Any]) -> str:
    def who(entry: dict[str, Any] | None) -> str:
        return "-" if entry is None else f"user {entry['userid']}, password {entry['password']}"

    return fields([
        ("Target", c["target_iqn"]),
        ("Initiators", ", ".join(c["acls"]) or "any (demo mode)"),
        ("CHAP", who(c["chap"])),
        ("Mutual CHAP", who(c["mutual_chap"])),
        ("Discovery CHAP", who(c["discovery_chap"])),
    ]) + "\nset in the config file (iscsi: chap / mutual_chap / discovery_chap); " \
         "restart the daemon to apply"


def json_parent() -> argparse.ArgumentParser:
    """`--json` accepted after the subcommand too (`thurvtl cartridge list --json`).

    SUPPRESS keeps a subcommand without it from resetting the global flag.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    return parent


def base_parser(prog: str, doc: str | None, default_socket: Path,
                env: str) -> tuple[argparse.ArgumentParser, Any]:
    """The top-level parser with --socket and --json, and its COMMAND subparsers."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--socket", type=Path, default=default_socket,
                        help=f"admin socket path (default {default_socket}, or ${env})")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="noun", required=True, metavar="COMMAND")
    return parser, sub


# ---- running ------------------------------------------------------------------------------


def progress_to_stderr(prog: str) -> Callable[[Any], None]:
    """Progress lines of a long operation go to stderr, so stdout stays the result."""

    def show(value: Any) -> None:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        print(f"{prog}: {text}", file=sys.stderr, flush=True)

    return show


def run_main(prog: str, args: argparse.Namespace, runner: Runner) -> int:
    """Run one parsed command: print its table or --json reply; a refusal is one line."""
    try:
        outcome = runner(args)
    except AdminError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if isinstance(outcome, int):
        return outcome
    result, text = outcome
    print(json.dumps(result, indent=2) if args.json else text)
    return EXIT_OK

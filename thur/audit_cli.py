"""`system audit tail` and `system audit verify`, shared by thurvtl and thurvsa.

Where the log is read: with `--audit-dir DIR` or `--config FILE`, straight from
the files (`<data_dir>/audit`), no daemon needed. Otherwise from the running
daemon (`audit.tail`, `audit.verify`); if it is not running, from the files of
the default config, with a note on stderr.

verify exits 0 valid, 1 broken (one line on stderr names segment, line, seq),
2 when the log cannot be read (missing or unreadable, config unreadable, or the
daemon refused). tail exits 0, or 1 with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thur.admin import AdminError, DaemonNotRunning, call
from thur.audit import EXIT_IO, AuditError, VerifyReport, read_entries, verify
from thur.config import ConfigError

Fetch = Callable[[int, int | None], list[dict[str, Any]]]
FOLLOW_BATCH = 1000
FOLLOW_INTERVAL = 1.0


@dataclass(frozen=True)
class Product:
    prog: str  # thurvtl, thurvsa
    default_config: Path
    load_config: Callable[[Path], Any]  # anything with .data_dir


def _count(text: str) -> int:
    n = int(text)
    if not 0 <= n <= 10000:
        raise argparse.ArgumentTypeError(f"{n} is not from 0 to 10000")
    return n


def add_parser(system_sub: Any, json_flag: argparse.ArgumentParser, product: Product) -> None:
    """`system audit tail|verify`, under the `system` command (thur/system_cli.py)."""
    source = argparse.ArgumentParser(add_help=False)
    where = source.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, metavar="FILE",
                       help="read <data_dir>/audit of this daemon config directly "
                            f"(without it: ask the daemon, or {product.default_config} "
                            "if it is not running)")
    where.add_argument("--audit-dir", type=Path, metavar="DIR",
                       help="read this audit directory directly")
    audit = system_sub.add_parser("audit", help="the log of every state change")
    audit_sub = audit.add_subparsers(dest="audit_verb", required=True)
    tail = audit_sub.add_parser("tail", parents=[json_flag, source],
                                help="the newest entries (--json: a list; with -f, one "
                                     "object per line)")
    tail.add_argument("-n", type=_count, default=20, dest="count", metavar="N",
                      help="how many (default 20)")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new entries until interrupted")
    audit_sub.add_parser("verify", parents=[json_flag, source],
                         help="check the hash chain: exit 0 valid, 1 broken, 2 unreadable")


def format_entry(e: dict[str, Any]) -> str:
    who = e.get("who") or {}
    name = who.get("user") or f"uid {who.get('uid')}"
    result = e.get("result") or {}
    outcome = "ok" if result.get("ok") else f"error: {result.get('error')}"
    args = json.dumps(e.get("args"), sort_keys=True, separators=(",", ":"))
    return (f"{e.get('seq'):>6}  {e.get('time')}  {name} (uid {who.get('uid')}, pid "
            f"{who.get('pid')})  {e.get('verb')} {args}  {outcome}")


def _local_dir(args: argparse.Namespace, product: Product) -> Path:
    if args.audit_dir is not None:
        return Path(args.audit_dir)
    config = product.load_config(args.config or product.default_config)
    return Path(config.data_dir) / "audit"


def _local_fallback(args: argparse.Namespace, product: Product, exc: AdminError) -> Path:
    try:
        directory = _local_dir(args, product)
    except ConfigError as config_error:
        raise AdminError(f"{exc}, and reading the log directly needs the daemon's config: "
                         f"{config_error}") from None
    print(f"{product.prog}: {exc}; reading {directory} directly", file=sys.stderr)
    return directory


def run_verify(args: argparse.Namespace, product: Product) -> int:
    try:
        if args.audit_dir is not None or args.config is not None:
            report = verify(_local_dir(args, product))
        else:
            try:
                report = VerifyReport.from_dict(call(args.socket, "audit.verify", timeout=600))
            except DaemonNotRunning as exc:
                report = verify(_local_fallback(args, product, exc))
    except (ConfigError, AdminError) as exc:
        print(f"{product.prog}: cannot verify the audit log: {exc}", file=sys.stderr)
        return EXIT_IO
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    elif report.status == "valid":
        print(f"audit log valid: {report.message}")
    if report.status != "valid" and not args.json:
        what = "broken" if report.status == "broken" else "unreadable"
        print(f"{product.prog}: audit log {what}: {report.message}", file=sys.stderr)
    return report.exit_code


def _fetcher(args: argparse.Namespace, product: Product) -> Fetch:
    def local(directory: Path) -> Fetch:
        return lambda n, after: read_entries(directory, n, after)

    if args.audit_dir is not None or args.config is not None:
        return local(_local_dir(args, product))

    def remote(n: int, after: int | None) -> list[dict[str, Any]]:
        request: dict[str, Any] = {"n": n}
        if after is not None:
            request["after"] = after
        return call(args.socket, "audit.tail", request)["entries"]

    try:
        remote(0, None)  # is it running?
    except DaemonNotRunning as exc:
        return local(_local_fallback(args, product, exc))
    return remote


def follow(fetch: Fetch, emit: Callable[[dict[str, Any]], None], after: int,
           sleep: Callable[[float], None] = time.sleep) -> None:
    """Print entries above `after` as they come, until interrupted (KeyboardInterrupt)."""
    while True:
        new = fetch(FOLLOW_BATCH, after)
        for entry in new:
            emit(entry)
        if new:
            after = new[-1]["seq"]
        if len(new) < FOLLOW_BATCH:
            sleep(FOLLOW_INTERVAL)


def run_tail(args: argparse.Namespace, product: Product) -> int:
    def emit(entry: dict[str, Any]) -> None:
        print(json.dumps(entry, sort_keys=True) if args.json else format_entry(entry),
              flush=True)

    try:
        fetch = _fetcher(args, product)
        # At least one, so a follower knows where the log ends even with -n 0.
        latest = fetch(max(args.count, 1), None)
        shown = latest[-args.count:] if args.count else []
        if args.json and not args.follow:
            print(json.dumps(shown, indent=2))
            return 0
        if not shown and not args.follow:
            print("no entries")
        for entry in shown:
            emit(entry)
        if args.follow:
            follow(fetch, emit, latest[-1]["seq"] if latest else 0)
    except KeyboardInterrupt:
        return 0
    except (ConfigError, AdminError, AuditError) as exc:
        print(f"{product.prog}: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace, product: Product) -> int:
    """`system audit ...`; returns the exit status."""
    if args.audit_verb == "verify":
        return run_verify(args, product)
    return run_tail(args, product)

"""The nouns `thurvtl` and `thurvsa` share: `iscsi chap`, `system ...`, `config ...`,
`completion`, `shell`. Each CLI adds its own nouns, then these (add_shared), and
hands anything its own `run` does not know to run_shared.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from thur import completion, config_cli, system_cli
from thur.admin import call
from thur.audit_cli import Product
from thur.cli_common import Outcome, format_chap


def add_shared(sub: Any, json_flag: argparse.ArgumentParser, product: Product) -> None:
    iscsi = sub.add_parser("iscsi", help="the iSCSI target")
    iscsi_sub = iscsi.add_subparsers(dest="verb", required=True)
    iscsi_sub.add_parser("chap", parents=[json_flag],
                         help="CHAP settings and initiator ACLs (passwords redacted; "
                              "set in the config file)")
    system_cli.add_parser(sub, json_flag, product)
    completion.add_parser(sub)
    config_cli.add_parser(sub, product)
    shell = sub.add_parser("shell", help="interactive shell (targetcli-style, TAB completes); "
                                         "with a command line, runs only that")
    shell.add_argument("line", nargs=argparse.REMAINDER, metavar="COMMAND",
                       help="e.g. `ls /`; without it, commands are read from the terminal "
                            "(or, one per line, from a pipe)")


SHARED = ("ping", "iscsi", "system", "config", "completion", "shell")


def run_shared(args: argparse.Namespace, product: Product,
               build_parser: Callable[[], argparse.ArgumentParser],
               size: Callable[[int | None], str]) -> Outcome:
    """`args.noun` is one of SHARED."""
    sock = args.socket
    if args.noun == "ping":
        return call(sock, "ping"), f"{product.prog}d is running"
    if args.noun == "shell":
        # configshell loads readline: only for this noun. thur.shell.vtl / thur.shell.vsa.
        shell = importlib.import_module(f"thur.shell.{product.prog.removeprefix('thur')}")
        return int(shell.main(sock, args.line))
    if args.noun == "iscsi":
        result = call(sock, "iscsi.chap")
        return result, format_chap(result)
    if args.noun == "config":
        return config_cli.run(args, product)
    if args.noun == "completion":
        print(completion.script(args.shell, product.prog, build_parser()), end="")
        return 0
    return system_cli.run(args, product, size)

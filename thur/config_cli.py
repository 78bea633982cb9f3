"""`thurvtl|thurvsa config defaults|check`: the config reference and a dry-run load.

Both run on their own, without the daemon: `defaults` prints the annotated
reference generated from thur/config_schema.py (the schema the loader uses),
`check` loads a file exactly as the daemon would and names the first bad key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from thur.audit_cli import Product
from thur.config_schema import VSA_SCHEMA, VTL_SCHEMA, render
from thur.configkit import ConfigError

# The daemons' own exit status for a config they refuse (docs/CONFIGURATION.md).
EXIT_BAD_CONFIG = 2
SCHEMAS = {"thurvtl": VTL_SCHEMA, "thurvsa": VSA_SCHEMA}


def add_parser(sub: Any, product: Product) -> None:
    config = sub.add_parser("config", help="the configuration file: reference and check")
    verbs = config.add_subparsers(dest="verb", required=True)
    verbs.add_parser("defaults", help="print every key with its default and meaning (YAML)")
    check = verbs.add_parser("check", help="load a config file as the daemon would")
    check.add_argument("--config", type=Path, default=product.default_config,
                       help=f"the file to check (default {product.default_config})")


def run(args: argparse.Namespace, product: Product) -> int:
    if args.verb == "defaults":
        print(render(SCHEMAS[product.prog], product.prog), end="")
        return 0
    try:
        product.load_config(args.config)
    except ConfigError as exc:
        print(f"{product.prog}: {args.config}: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    print(f"{args.config}: valid")
    return 0

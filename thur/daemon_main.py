"""From argv to serving, the same for thurvtld and thurvsad.

Arguments, logging, the config, the kernel prerequisites, `--teardown`, the
signals, and the exit status of every way a start can fail (documented in
docs/OPERATIONS.md): 2 the config, 3 the kernel, 4 the storage backend. What
differs per product (its config loader, its daemon, NVMe's extra modules) comes
in a DaemonProduct.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import configfs
from thur.configkit import ConfigError
from thur.storage_config import StorageUnavailable

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_KERNEL = 3
EXIT_STORAGE = 4


class Served(Protocol):
    """What main() needs of a daemon object."""

    reattaching: bool

    def start(self) -> None: ...

    def serve(self) -> None: ...

    def request_stop(self, detach_only: bool) -> None: ...

    def shutdown(self) -> None: ...


def _no_kernel_extras(_config: Any, _teardown: bool) -> list[str]:
    return []


@dataclass(frozen=True)
class DaemonProduct:
    prog: str  # thurvtld, thurvsad
    description: str
    default_config: Path
    load_config: Callable[[Path], Any]
    make_daemon: Callable[[Any], Served]
    teardown: Callable[[Any], int]  # `--teardown`: remove a crashed run's kernel objects
    # After the LIO modules load: more modules, and reasons to refuse (NVMe TLS).
    # May raise configfs.PrerequisiteError.
    kernel_extras: Callable[[Any, bool], list[str]] = _no_kernel_extras
    # Errors of make_daemon that are the config's fault (exit 2), e.g. a refused shrink.
    config_refusals: tuple[type[Exception], ...] = ()


def parse_args(product: DaemonProduct, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=product.prog, description=product.description)
    parser.add_argument("--config", type=Path, default=product.default_config)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    parser.add_argument(
        "--teardown",
        action="store_true",
        help="remove the kernel objects a previous run created, then exit",
    )
    return parser.parse_args(argv)


def ledger_path(data_dir: Path) -> Path:
    """Where a daemon records the kernel objects it created (for --teardown)."""
    return data_dir / "configfs-ledger.json"


def teardown_ledger(path: Path) -> int:
    """Remove every kernel object the ledger at `path` records."""
    ledger = configfs.Ledger.load(path)
    for warning in configfs.teardown(ledger):
        log.warning("%s", warning)
    log.info("teardown complete")
    return 0


def main(product: DaemonProduct, argv: list[str] | None = None) -> int:
    args = parse_args(product, argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def refuse(message: str, status: int) -> int:
        print(f"{product.prog}: {message}", file=sys.stderr)
        return status

    try:
        config = product.load_config(args.config)
    except ConfigError as exc:
        return refuse(str(exc), EXIT_CONFIG)
    problems = configfs.check_prerequisites()
    try:
        if not problems:
            configfs.load_modules()
            problems = product.kernel_extras(config, args.teardown)
    except configfs.PrerequisiteError as exc:
        problems = [str(exc)]
    if problems:
        for problem in problems:
            print(f"{product.prog}: {problem}", file=sys.stderr)
        return EXIT_KERNEL
    if args.teardown:
        return product.teardown(config)

    try:
        daemon = product.make_daemon(config)
    except product.config_refusals as exc:
        return refuse(str(exc), EXIT_CONFIG)
    except StorageUnavailable as exc:
        return refuse(f"storage check failed, not starting:\n{exc}", EXIT_STORAGE)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        # SIGUSR1: leave the kernel objects (and the initiators' sessions) for the next start.
        daemon.request_stop(detach_only=signum == signal.SIGUSR1)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, on_signal)
    try:
        daemon.start()
    except ConfigError as exc:  # http.listen cannot be bound
        daemon.request_stop(detach_only=True)
        daemon.shutdown()
        return refuse(str(exc), EXIT_CONFIG)
    except configfs.ConfigfsError as exc:
        log.error("kernel configuration failed: %s", exc)
        # Tear down only what this start created; after a crash or an upgrade the
        # kernel objects carry live sessions, so leave them for the next attempt.
        daemon.request_stop(detach_only=daemon.reattaching)
        daemon.shutdown()
        return EXIT_KERNEL
    daemon.serve()
    return 0

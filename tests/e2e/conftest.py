"""Fixtures for the e2e tests: they need root and the real kernel target (the test VM)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import kit


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not kit.CONFIGFS_TARGET.parent.exists():
        # Not a skip: e2e tests that cannot run must fail loudly, never pass silently.
        raise pytest.UsageError(
            "e2e tests need the real kernel target: run them with `make e2e` (inside the test VM)"
        )


@pytest.fixture
def vtl(tmp_path: Path) -> Iterator[Callable[..., kit.Daemon]]:
    """Factory for a thurvtld on a fresh data dir; cleans up kernel state afterwards."""
    kit.start_iscsid()
    kit.logout_all()
    made: list[kit.Daemon] = []

    def make(**overrides: Any) -> kit.Daemon:
        data_dir = tmp_path / f"data{len(made)}"
        data_dir.mkdir()
        config_path = tmp_path / f"thurvtl{len(made)}.yaml"
        config = kit.write_config(config_path, data_dir, **overrides)
        daemon = kit.Daemon(config_path, config, tmp_path / f"thurvtld{len(made)}.log")
        made.append(daemon)
        return daemon

    yield make
    kit.logout_all()
    for daemon in made:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.signal(15)
        # Whatever a crashed test left in the kernel, remove it for the next test.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "thur.vtl.daemon",
                "--config",
                str(daemon.config_path),
                "--teardown",
            ],
            check=False,
            timeout=120,
        )
        print(f"--- {daemon.log_path.name} ---\n{daemon.log()}")

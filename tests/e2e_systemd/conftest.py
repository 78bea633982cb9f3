"""The systemd e2e tests need the test VM booted with systemd as PID 1."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not Path("/sys/kernel/config").exists() or not Path("/run/systemd/system").is_dir():
        # Not a skip: tests that cannot run must fail loudly, never pass silently.
        raise pytest.UsageError(
            "these tests install and start Thur's units: run them with `make e2e-systemd` "
            "(the test VM with systemd as PID 1: vagrant/vm run --systemd)"
        )

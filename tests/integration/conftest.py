"""Fixtures: one real server per service for the session, started only when a test needs it.

`target` is parametrized over local / s3 / gcs / azure: a test that takes it
runs once per backend kind, each on its own key prefix in the shared bucket
so tests never see each other's objects. A missing server program is an
error naming the install script, never a silent skip: a run that skipped
its servers would prove nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from thur.cloud import Backend, LocalBackend

from .servers import Azurite, FakeGcs, SeaweedFS, Server, ServerMissing

KINDS = ("local", "s3", "gcs", "azure")
CLOUD_KINDS = ("s3", "gcs", "azure")
SERVER_CLASSES: dict[str, type[Server]] = {"s3": SeaweedFS, "gcs": FakeGcs, "azure": Azurite}


def launch(kind: str, workdir: Path) -> Server:
    try:
        server = SERVER_CLASSES[kind](workdir)
    except ServerMissing as e:
        pytest.fail(str(e), pytrace=False)
    server.start()
    return server


def _session_server(kind: str, factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = launch(kind, factory.mktemp(kind))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _session_server("s3", tmp_path_factory)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _session_server("gcs", tmp_path_factory)


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _session_server("azure", tmp_path_factory)


@dataclass
class Target:
    """A backend kind under test: builds backends on one private prefix."""

    kind: str
    server: Server | None  # None for local
    root: Path  # local: the bucket directory
    prefix: str

    def backend(self, **overrides: object) -> Backend:
        if self.server is None:
            return LocalBackend(self.root, fsync=False)
        overrides.setdefault("prefix", self.prefix)
        return self.server.backend(**overrides)

    def missing_bucket(self) -> tuple[str, Callable[[], Backend]]:
        """A bucket name that does not exist, and a constructor of a backend on it."""
        name = "no-such-bucket-" + uuid.uuid4().hex[:8]
        if self.server is None:
            return name, lambda: LocalBackend(self.root / name)
        field = "container" if self.kind == "azure" else "bucket"
        return name, lambda: self.backend(**{field: name})


@pytest.fixture(params=KINDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return make_target(request, tmp_path, request.param)


@pytest.fixture(params=CLOUD_KINDS)
def cloud_target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    return make_target(request, tmp_path, request.param)


def make_target(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Target:
    root = tmp_path / "bucket"
    root.mkdir()
    server = None if kind == "local" else request.getfixturevalue(f"{kind}_server")
    prefix = f"t/{request.node.name.replace('[', '-').rstrip(']')}-{uuid.uuid4().hex[:8]}"
    return Target(kind, server, root, prefix)

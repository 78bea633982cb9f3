"""The outage test: the server goes away in the middle of an upload of many packs.

Each case gets its own server (the session ones stay untouched). The upload
is held at a known point — some packs already PUT, others in flight on the
other workers — while the test takes the server down for real:

- `kill`: SIGKILL, then a new process on the same port and data dir
  (connection refused meanwhile). Azurite gets SIGTERM instead: it loses
  acknowledged blobs on SIGKILL (see `Azurite.crash`);
- `pause`: SIGSTOP, then SIGCONT (connections accepted but never answered:
  the client's read timeout fires, and a PUT the server finishes later
  races with our retry of it).

The tier retries on a short schedule (the real one is 1 s → 30 s), the flush
completes, and every acknowledged chunk is read back from the bucket by a
machine with an empty data_dir.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from thur.cloud import Backend, BackendTransient, ObjectInfo

from .conftest import CLOUD_KINDS, launch
from .servers import Server
from .test_tier import backup_like_stream, ingest, open_tier, read_all

KiB = 1024
MiB = 1024 * KiB
TIMEOUTS = {
    "s3": {"connect_timeout": 1.0, "read_timeout": 1.0},
    "gcs": {"connect_timeout": 1.0, "timeout": 1.0},
    "azure": {"connect_timeout": 1.0, "read_timeout": 1.0},
}


class Gate:
    """A backend wrapper that holds the upload at one pack PUT and counts transient failures."""

    def __init__(self, inner: Backend, hold_at: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.conditional_create = inner.conditional_create
        self.hold_at = hold_at
        self.pack_puts = 0
        self.transient: list[str] = []
        self.reached = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()

    def _count(self, e: BackendTransient) -> None:
        with self._lock:
            self.transient.append(str(e))

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if key.startswith("packs/"):
            with self._lock:
                n = self.pack_puts
                self.pack_puts += 1
            if n == self.hold_at:
                self.reached.set()
                assert self.released.wait(timeout=60), "the test never released the upload"
        try:
            self.inner.put(key, data, if_absent=if_absent)
        except BackendTransient as e:
            self._count(e)
            raise

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(key, start, length)

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            yield from self.inner.list(prefix)
        except BackendTransient as e:
            self._count(e)
            raise


@pytest.fixture(params=CLOUD_KINDS)
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    server = launch(request.param, tmp_path / "server")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["kill", "pause"])
def test_uploads_resume_after_the_server_comes_back(
    own_server: Server, mode: str, tmp_path: Path
) -> None:
    kind = own_server.kind
    data = backup_like_stream(seed=11, size=4 * MiB)
    gate = Gate(own_server.backend(prefix="outage", **TIMEOUTS[kind]), hold_at=3)
    tier = open_tier(tmp_path / "pool", gate, workers=3)  # type: ignore[arg-type]
    ids = ingest(tier, data)
    assert tier.store.stats().pinned_bytes > 0

    with ThreadPoolExecutor(1) as pool:
        flushing = pool.submit(tier.flush)
        assert gate.reached.wait(timeout=30), "the upload never reached the gate"
        if mode == "kill":
            own_server.crash()
            gate.released.set()
            time.sleep(1.0)  # uploads fail against the dead port meanwhile
            own_server.start()  # same port, same data dir
        else:
            own_server.pause()
            gate.released.set()
            time.sleep(2.5)  # longer than the 1 s read timeout
            own_server.resume()
        report = flushing.result(timeout=120)

    assert gate.transient, "the outage was never seen: the test proved nothing"
    assert report.chunks == len(set(ids)) and not report.corrupt
    assert tier.store.stats().pinned_bytes == 0
    tier.close()

    # Every acknowledged chunk, from the bucket alone.
    fresh = open_tier(tmp_path / "fresh", own_server.backend(prefix="outage"))
    fresh.sync_index()
    assert read_all(fresh, ids) == data
    fresh.close()

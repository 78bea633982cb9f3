"""One daemon's observability: its metrics, its LUs, its HTTP endpoint.

The daemons use three calls: `open_device` instead of `TcmuDevice.open` (the ring
gets the SCSI latency hook and the LU is listed), `start()` at the beginning of
their start (binds `http.listen`; a ConfigError names the key) and `close()` at
shutdown. With `http: null` in the config nothing is served and no hook is set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import configfs
from handlers.tcmu import CommandListener, TcmuDevice
from thur.cloud import TieredPool
from thur.config import HttpConfig
from thur.httpd import Endpoints, HttpService
from thur.metrics import LuInfo, Metrics
from thur.otlp import OtlpConfig, OtlpExport

log = logging.getLogger(__name__)

Gauges = dict[str, tuple[str, Callable[[], float]]]


def device_kind(engine: object) -> str:
    """The `device` label: changer, tape or disk, from the engine's peripheral type."""
    name = type(engine).__name__
    return {"MediumChanger": "changer", "TapeDrive": "tape", "ThinDisk": "disk"}.get(
        name, name.lower()
    )


class Observability:
    def __init__(
        self,
        product: str,
        config: HttpConfig | None,
        *,
        tier: TieredPool,
        target_iqn: str,
        info: Callable[[], dict[str, Any]],
        gauges: Gauges | None = None,
        nvme_subsystems: Callable[[], list[str]] | None = None,
        configfs_root: Path = configfs.DEFAULT_ROOT,
        otlp: OtlpConfig | None = None,
    ) -> None:
        self.product = product
        self.config = config
        self.otlp_config = otlp
        self.otlp: OtlpExport | None = None
        self.target_iqn = target_iqn
        self.info = info
        self.nvme_subsystems = nvme_subsystems
        self.configfs_root = configfs_root
        self._lock = threading.Lock()
        self._lus: dict[str, LuInfo] = {}
        self.metrics = Metrics(
            product, tier=tier, lus=self.lus, sessions=self._session_count, gauges=gauges
        )
        self.http: HttpService | None = None

    # --- LUs ------------------------------------------------------------------

    def listener(self, engine: object) -> CommandListener | None:
        """The ring hook for `engine`'s LU; None (no per-command cost) when nothing
        reads the metrics (http and otlp off)."""
        if self.config is None and self.otlp_config is None:
            return None
        return self.metrics.command_listener(device_kind(engine), engine)

    def open_device(self, hba: int, name: str, engine: Any) -> TcmuDevice:
        """`TcmuDevice.open` with the latency hook, the LU listed for /metrics, /health."""
        device = TcmuDevice.open(hba, name, engine, on_command=self.listener(engine))
        self.add_lu(name, engine, device)
        return device

    def add_lu(self, name: str, engine: object, device: Any) -> None:
        with self._lock:
            self._lus[name] = LuInfo(name, device_kind(engine), device)

    def lus(self) -> list[LuInfo]:
        """The LUs being served; a closed device (volume deleted, shutdown) drops out."""
        with self._lock:
            for name in [n for n, lu in self._lus.items() if lu.device.closed]:
                del self._lus[name]
            return sorted(self._lus.values(), key=lambda lu: lu.name)

    # --- HTTP -----------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve `http.listen` (ConfigError naming the key if it cannot); start
        the OTLP export when `otlp.endpoint` is set."""
        if self.otlp_config is not None and self.otlp is None:
            self.otlp = OtlpExport(self.metrics.registry, self.otlp_config, self.product)
            self.otlp.start()
        if self.config is None or self.http is not None:
            return
        self.http = HttpService(
            self.config,
            Endpoints(self.metrics.registry, self.health, self.sessions, self._info),
        )
        self.http.start()
        log.info("http: /health /metrics /sessions /info on %s", self.config.listen)

    def close(self) -> None:
        if self.otlp is not None:
            self.otlp.close()
            self.otlp = None
        if self.http is not None:
            self.http.close()
            self.http = None

    # --- routes ---------------------------------------------------------------

    def health(self) -> tuple[int, Any]:
        """200 while every LU's serve loop runs; 503 naming the ones that died (a restart
        reattaches them, so a liveness probe failing here is the right reaction)."""
        lus = self.lus()
        failed = {lu.name: str(lu.device.error) for lu in lus if lu.device.error is not None}
        body = {"status": "failed" if failed else "ok", "product": self.product,
                "lus": len(lus), "failed": failed}
        return (503 if failed else 200), body

    def sessions(self) -> tuple[int, Any]:
        try:
            iscsi = [s.as_dict() for s in
                     configfs.iscsi_sessions(self.target_iqn, self.configfs_root)]
        except OSError as exc:
            return 503, {"error": f"configfs unreadable: {exc}"}
        nvme: dict[str, Any] | None = None
        if self.nvme_subsystems is not None:
            nvme = {nqn: configfs.nvmet_controllers(nqn) for nqn in self.nvme_subsystems()}
        return 200, {"target_iqn": self.target_iqn, "iscsi": iscsi, "nvme": nvme}

    def _info(self) -> tuple[int, Any]:
        return 200, {"product": self.product, **self.info()}

    def _session_count(self) -> int | None:
        try:
            return len(configfs.iscsi_sessions(self.target_iqn, self.configfs_root))
        except OSError:
            return None

"""Optional OTLP/HTTP export of a daemon's metrics (off unless `otlp.endpoint` is set).

The metrics live in one prometheus-client registry (thur/metrics.py), which
/metrics serves. For OTLP the same registry is read every `otlp.interval`
seconds, each family turned into the OpenTelemetry SDK's data model (counter
-> monotonic cumulative Sum, gauge -> Gauge, histogram -> cumulative explicit-
bucket Histogram) and sent with the SDK's own OTLP/HTTP exporter (protobuf
encoding, retries, headers, TLS). There is no Prometheus-to-OTLP bridge in the
Python SDK, and re-declaring every metric as an OTel instrument would make two
sources of truth; this mapping is the only hand-written part.

The opentelemetry packages are an optional extra (`pip install 'thur[otlp]'`):
a config that turns OTLP on without them is refused at start, naming the key.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric as PromMetric

from thur.configkit import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str  # the full URL, e.g. http://collector:4318/v1/metrics
    interval: float = 60.0
    timeout: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)


EXPORT_NAMES = ("AggregationTemporality", "Gauge", "Histogram", "HistogramDataPoint", "Metric",
                "MetricsData", "NumberDataPoint", "ResourceMetrics", "ScopeMetrics", "Sum")


def _sdk() -> SimpleNamespace:
    """The SDK's data model and exporter, imported only when OTLP is on (ImportError
    without the extra)."""
    export = importlib.import_module("opentelemetry.sdk.metrics.export")
    http = importlib.import_module("opentelemetry.exporter.otlp.proto.http.metric_exporter")
    resources = importlib.import_module("opentelemetry.sdk.resources")
    scope = importlib.import_module("opentelemetry.sdk.util.instrumentation")
    return SimpleNamespace(
        **{name: getattr(export, name) for name in EXPORT_NAMES},
        OTLPMetricExporter=http.OTLPMetricExporter,
        Resource=resources.Resource,
        InstrumentationScope=scope.InstrumentationScope,
    )


class MetricsMapper:
    """prometheus-client families -> the SDK's MetricsData (one snapshot)."""

    def __init__(self, service: str, start_ns: int) -> None:
        self.sdk = _sdk()
        self.start_ns = start_ns
        self.resource = self.sdk.Resource.create({"service.name": service})
        self.scope = self.sdk.InstrumentationScope("thur", None)

    def snapshot(self, families: Iterable[PromMetric], now_ns: int | None = None) -> Any:
        now = now_ns or time.time_ns()
        metrics = [m for f in families if (m := self._metric(f, now)) is not None]
        scope = self.sdk.ScopeMetrics(self.scope, metrics, None)
        return self.sdk.MetricsData([self.sdk.ResourceMetrics(self.resource, [scope], None)])

    def _metric(self, family: PromMetric, now: int) -> Any:
        sdk = self.sdk
        cumulative = sdk.AggregationTemporality.CUMULATIVE
        if family.type == "counter":
            points = self._points(family, "_total", now)
            data = sdk.Sum(points, cumulative, is_monotonic=True)
        elif family.type in ("gauge", "untyped", "info"):
            suffix = "_info" if family.type == "info" else ""
            data = sdk.Gauge(self._points(family, suffix, now))
        elif family.type == "histogram":
            data = sdk.Histogram(self._histogram_points(family, now), cumulative)
        else:  # summary, stateset, gaugehistogram: none of ours
            return None
        if not data.data_points:
            return None
        return sdk.Metric(family.name, family.documentation, family.unit or None, data)

    def _points(self, family: PromMetric, suffix: str, now: int) -> list[Any]:
        return [
            self.sdk.NumberDataPoint(dict(s.labels), self.start_ns, now, s.value)
            for s in family.samples
            if s.name == family.name + suffix and not math.isnan(s.value)
        ]

    def _histogram_points(self, family: PromMetric, now: int) -> list[Any]:
        series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        for s in family.samples:
            labels = {k: v for k, v in s.labels.items() if k != "le"}
            entry = series.setdefault(tuple(sorted(labels.items())),
                                      {"buckets": [], "count": 0, "sum": 0.0})
            if s.name.endswith("_bucket"):
                entry["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                entry["count"] = int(s.value)
            elif s.name.endswith("_sum"):
                entry["sum"] = s.value
        points = []
        for key, entry in series.items():
            cumulative = sorted(entry["buckets"])
            bounds = [le for le, _ in cumulative if le != math.inf]
            counts, previous = [], 0.0
            for _, running in cumulative:  # Prometheus counts up to each bound; OTLP per bucket
                counts.append(int(running - previous))
                previous = running
            points.append(self.sdk.HistogramDataPoint(
                dict(key), self.start_ns, now, entry["count"], entry["sum"], counts, bounds,
                None, None))  # min and max: Prometheus does not keep them
        return points


class OtlpExport:
    """A thread exporting the registry every `interval` seconds, and once at close."""

    def __init__(self, registry: CollectorRegistry, config: OtlpConfig, service: str) -> None:
        try:
            self.mapper = MetricsMapper(service, time.time_ns())
        except ImportError as exc:
            raise ConfigError("otlp.endpoint", config.endpoint,
                              f"the opentelemetry packages (pip install 'thur[otlp]'): {exc}")\
                from None
        self.registry = registry
        self.config = config
        # The SDK logs an ERROR for every failed export; ours says it once per change.
        logging.getLogger(self.mapper.sdk.OTLPMetricExporter.__module__).setLevel(logging.CRITICAL)
        self.exporter = self.mapper.sdk.OTLPMetricExporter(
            endpoint=config.endpoint, headers=config.headers, timeout=config.timeout)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._healthy = True

    def start(self) -> None:
        self._thread.start()
        log.info("otlp: metrics to %s every %.0f s", self.config.endpoint, self.config.interval)

    def export_once(self) -> bool:
        data = self.mapper.snapshot(self.registry.collect())
        try:
            ok = self.exporter.export(data, timeout_millis=self.config.timeout * 1000).name \
                == "SUCCESS"
        except Exception as exc:  # a collector's trouble must never touch the data path
            log.debug("otlp export: %r", exc)
            ok = False
        if ok != self._healthy:  # say so once per change, not every interval
            (log.info if ok else log.warning)(
                "otlp: export to %s %s", self.config.endpoint, "works again" if ok else "fails")
            self._healthy = ok
        return ok

    def _run(self) -> None:
        while not self._stop.wait(self.config.interval):
            self.export_once()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.config.timeout + 5)
        self.export_once()  # the last figures before the daemon goes
        self.exporter.shutdown()

"""OTLP export: the SDK's real OTLP/HTTP exporter posting to a receiver on 127.0.0.1,
which decodes the protobuf request the way a collector does."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from thur import otlp
from thur.config import ConfigError, parse_vtl_config
from thur.otlp import OtlpConfig, OtlpExport


class Receiver:
    """An OTLP/HTTP metrics endpoint: keeps each request, answers 200 (or `status`)."""

    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                receiver.headers.append(dict(self.headers))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def metrics(self, index: int = -1) -> dict[str, Any]:
        out = {}
        for rm in self.requests[index].resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = m
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    uploads = Counter("thurvtl_uploads", "Uploads", ["outcome"], registry=registry)
    uploads.labels("ok").inc(5)
    uploads.labels("failed").inc(1)
    Gauge("thurvtl_pool_bytes", "Pool bytes", registry=registry).set(4096)
    latency = Histogram("thurvtl_scsi_command_seconds", "Latency", ["opcode"],
                        buckets=(0.001, 0.01, 0.1), registry=registry)
    for seconds in (0.0005, 0.005, 0.005, 0.05, 5.0):
        latency.labels("READ_10").observe(seconds)
    return registry


def test_counters_gauges_and_histograms_reach_the_collector(receiver: Receiver) -> None:
    export = OtlpExport(_registry(), OtlpConfig(receiver.url, interval=3600, timeout=5,
                                                headers={"x-api-key": "k1"}), "thurvtl")
    assert export.export_once()
    assert receiver.headers[0]["x-api-key"] == "k1"
    resource = receiver.requests[0].resource_metrics[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "thurvtl"
    metrics = receiver.metrics()

    uploads = metrics["thurvtl_uploads"]
    assert uploads.sum.is_monotonic and uploads.sum.aggregation_temporality == 2  # cumulative
    by_outcome = {p.attributes[0].value.string_value: p.as_double
                  for p in uploads.sum.data_points}
    assert by_outcome == {"ok": 5.0, "failed": 1.0}
    assert metrics["thurvtl_pool_bytes"].gauge.data_points[0].as_double == 4096.0

    hist = metrics["thurvtl_scsi_command_seconds"].histogram
    point = hist.data_points[0]
    assert point.attributes[0].key == "opcode"
    assert point.count == 5 and point.sum == pytest.approx(5.0605)
    assert list(point.explicit_bounds) == [0.001, 0.01, 0.1]
    assert list(point.bucket_counts) == [1, 2, 1, 1]  # per bucket, the last one to +Inf
    assert not point.HasField("min")  # Prometheus keeps no min/max: left unset
    # `_created` samples are not metrics of their own.
    assert not any(name.endswith("_created") for name in metrics)


def test_collector_down_or_refusing_is_logged_once_and_never_raises(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    export = OtlpExport(_registry(), OtlpConfig(receiver.url, interval=3600, timeout=2),
                        "thurvsa")
    receiver.status = 400  # permanent: the SDK does not retry it
    assert not export.export_once()
    assert not export.export_once()
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count(f"otlp: export to {receiver.url} fails") == 1
    assert not any("Failed to export" in m for m in messages)  # the SDK's own, every time
    receiver.status = 200
    assert export.export_once()
    assert f"otlp: export to {receiver.url} works again" in caplog.text


def test_the_thread_exports_on_its_interval_and_at_close(receiver: Receiver) -> None:
    export = OtlpExport(_registry(), OtlpConfig(receiver.url, interval=1, timeout=5), "thurvtl")
    export.start()
    threading.Event().wait(2.5)
    export.close()
    assert len(receiver.requests) >= 2  # at least one on the interval, one at close


def test_config_is_off_by_default_and_checked(tmp_path: Path) -> None:
    base: dict[str, Any] = {"data_dir": str(tmp_path), "library": {}}
    assert parse_vtl_config(base).otlp is None
    cfg = parse_vtl_config({**base, "otlp": {"endpoint": "http://127.0.0.1:4318/v1/metrics",
                                             "interval": 15, "headers": {"k": "v"}}})
    assert cfg.otlp == OtlpConfig("http://127.0.0.1:4318/v1/metrics", 15, 10, {"k": "v"})
    for bad, key in (({"endpoint": "127.0.0.1:4318"}, "otlp.endpoint"),
                     ({"endpoint": "http://x", "interval": 0}, "otlp.interval"),
                     ({"endpoint": "http://x", "headers": ["a"]}, "otlp.headers"),
                     ({"endpont": "http://x"}, "otlp.endpont")):
        with pytest.raises(ConfigError) as err:
            parse_vtl_config({**base, "otlp": bad})
        assert err.value.key == key


def test_without_the_extra_the_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise ImportError("No module named 'opentelemetry'")

    monkeypatch.setattr(otlp, "_sdk", missing)
    with pytest.raises(ConfigError, match=r"otlp.endpoint.*pip install 'thur\[otlp\]'"):
        OtlpExport(CollectorRegistry(), OtlpConfig("http://127.0.0.1:1/v1/metrics"), "thurvtl")

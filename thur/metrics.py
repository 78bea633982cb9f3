"""Prometheus metrics of one daemon (thurvtld: prefix `thurvtl`, thurvsad: `thurvsa`).

Everything but the SCSI latency histogram is read at scrape time from stats the
components keep anyway (`LocalStore.stats()`, `TieredPool.counters()`, each ring's
`RingStats`, configfs), by custom collectors: nothing is added to a hot path but one
histogram observe per SCSI command. Each daemon has its own `CollectorRegistry`, so
tests and co-resident daemons never share state. docs/OPERATIONS.md lists the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from handlers.scsi.opcodes import Op
from handlers.scsi.sense import SenseKey
from handlers.tcmu import CommandListener
from thur.cloud import TieredPool

log = logging.getLogger(__name__)

# Disk commands take microseconds to milliseconds; tape commands (LOCATE, ERASE, a
# WRITE under backpressure) up to hours: one set of buckets covers both.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0,
)
_STATUS_NAMES = {
    0x00: "GOOD", 0x04: "CONDITION_MET", 0x08: "BUSY", 0x18: "RESERVATION_CONFLICT",
    0x28: "TASK_SET_FULL", 0x30: "ACA_ACTIVE", 0x40: "TASK_ABORTED",
}
_CHECK_CONDITION = 0x02
UPLOAD_SERIES = [(kind, outcome) for kind in ("pack", "index") for outcome in ("ok", "error")]
DOWNLOAD_OUTCOMES = ("ok", "not_found", "error")


class ServedDevice(Protocol):
    """What the collectors read of a `handlers.tcmu.TcmuDevice`."""

    ring: Any
    error: BaseException | None

    @property
    def running(self) -> bool: ...

    @property
    def closed(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class LuInfo:
    """One logical unit served through TCMU: its backstore name, kind and device."""

    name: str
    kind: str  # "changer", "tape" or "disk"
    device: ServedDevice


def sense_key(sense: bytes) -> int | None:
    """The sense key of fixed (70h/71h) or descriptor (72h/73h) sense data."""
    if len(sense) >= 3 and sense[0] & 0x7F in (0x70, 0x71):
        return sense[2] & 0x0F
    if len(sense) >= 2 and sense[0] & 0x7F in (0x72, 0x73):
        return sense[1] & 0x0F
    return None


def outcome_name(status: int, sense: bytes) -> str:
    """GOOD, BUSY, ...; for CHECK CONDITION the sense key (NOT_READY, UNIT_ATTENTION...)."""
    if status == _CHECK_CONDITION:
        key = sense_key(sense)
        if key is None:
            return "CHECK_CONDITION"
        try:
            return SenseKey(key).name
        except ValueError:
            return f"SENSE_KEY_{key:X}"
    return _STATUS_NAMES.get(status, f"STATUS_{status:02X}")


def opcode_names(engine: object) -> dict[int, str]:
    """Opcode -> label for one device class: its own handler names (so 1Bh is
    LOAD_UNLOAD on a drive and START_STOP_UNIT on a disk), the opcode's name when
    service actions share it. Opcodes not in the table are labelled by hex."""
    table = getattr(engine, "COMMANDS", {})
    by_opcode: dict[int, list[tuple[int | None, str]]] = {}
    for (opcode, sa), cmd in table.items():
        by_opcode.setdefault(opcode, []).append((sa, cmd.name))
    names: dict[int, str] = {}
    for opcode, entries in by_opcode.items():
        if len(entries) == 1 and entries[0][0] is None:
            names[opcode] = entries[0][1].upper()
        else:
            try:
                names[opcode] = Op(opcode).name
            except ValueError:
                names[opcode] = f"0x{opcode:02X}"
    return names


class Metrics:
    """The registry of one daemon and the per-LU command listeners feeding it."""

    def __init__(
        self,
        prefix: str,
        *,
        tier: TieredPool,
        lus: Callable[[], Iterable[LuInfo]],
        sessions: Callable[[], int | None],
        gauges: dict[str, tuple[str, Callable[[], float]]] | None = None,
    ) -> None:
        self.prefix = prefix
        self.registry = CollectorRegistry(auto_describe=True)
        self.scsi = Histogram(
            "scsi_command_seconds",
            "SCSI commands answered, by device kind, opcode and outcome, with the time "
            "each took from ring pick-up to response",
            ["device", "opcode", "outcome"],
            namespace=prefix,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(PoolCollector(prefix, tier))
        self.registry.register(RingCollector(prefix, lus))
        self.registry.register(DaemonCollector(prefix, sessions, gauges or {}))
        # process_* (CPU, RSS, open fds, start time): unprefixed, as every exporter names them.
        ProcessCollector(registry=self.registry)

    def command_listener(self, kind: str, engine: object) -> CommandListener:
        """The ring hook of one LU: one cached histogram child per (opcode, outcome).

        Each LU has its own listener and its ring calls it from one thread, so the
        cache needs no lock.
        """
        names = opcode_names(engine)
        children: dict[tuple[int, int, int | None], Any] = {}
        histogram = self.scsi

        def observe(opcode: int, status: int, sense: bytes, seconds: float) -> None:
            key = (opcode, status, sense_key(sense) if status == _CHECK_CONDITION else None)
            child = children.get(key)
            if child is None:
                label = names.get(opcode) or f"0x{opcode:02X}"
                child = histogram.labels(kind, label, outcome_name(status, sense))
                children[key] = child
            child.observe(seconds)

        return observe


class PoolCollector(Collector):
    """The chunk pool (`LocalStore.stats()`) and its backend traffic (`TieredPool.counters()`)."""

    def __init__(self, prefix: str, tier: TieredPool) -> None:
        self.p = prefix
        self.tier = tier

    def collect(self) -> Iterator[Metric]:
        p = self.p
        st = self.tier.store.stats()
        c = st.counters
        yield GaugeMetricFamily(f"{p}_pool_used_bytes", "Bytes of chunks in the local "
                                "pool (cache)", value=st.used_bytes)
        yield GaugeMetricFamily(f"{p}_pool_capacity_bytes", "The local pool's budget",
                                value=st.budget_bytes)
        yield GaugeMetricFamily(f"{p}_pool_pinned_bytes", "Pool bytes not yet in the backend "
                                "(cannot be evicted)", value=st.pinned_bytes)
        yield GaugeMetricFamily(f"{p}_pool_chunks", "Chunks in the local pool", value=st.chunks)
        yield CounterMetricFamily(f"{p}_pool_evictions", "Chunks evicted to make room",
                                  value=c.evictions)
        yield CounterMetricFamily(f"{p}_pool_evicted_bytes", "Bytes evicted to make room",
                                  value=c.evicted_bytes)
        yield CounterMetricFamily(f"{p}_pool_backpressure_waits", "Writes that waited for "
                                  "room in the pool", value=c.backpressure_waits)
        yield CounterMetricFamily(f"{p}_pool_backpressure_wait_seconds", "Time writers spent "
                                  "waiting for room", value=c.backpressure_wait_seconds)
        yield CounterMetricFamily(f"{p}_pool_backpressure_timeouts", "Writes refused after "
                                  "the longest wait (NOT READY to the initiator)",
                                  value=c.backpressure_timeouts)
        yield CounterMetricFamily(f"{p}_dedup_hits", "Chunks written that the pool or the "
                                  "backend already held", value=c.dedup_hits)
        yield CounterMetricFamily(f"{p}_logical_bytes", "Plaintext bytes written to the pool",
                                  value=c.logical_bytes)
        yield CounterMetricFamily(f"{p}_unique_bytes", "Plaintext bytes of the chunks that "
                                  "were new (stored)", value=c.unique_bytes)

        t = self.tier.counters()
        backend = self.tier.backend.name
        uploads = CounterMetricFamily(f"{p}_backend_uploads", "Objects PUT to the backend, by "
                                      "kind (pack, index) and outcome",
                                      labels=["backend", "kind", "outcome"])
        # Every known series from zero, so rate() and alerts work before the first error.
        for key in sorted({*UPLOAD_SERIES, *t.uploads}):
            uploads.add_metric([backend, *key], t.uploads.get(key, 0))
        yield uploads
        yield _labelled(CounterMetricFamily(f"{p}_backend_upload_bytes", "Bytes PUT to the "
                        "backend", labels=["backend"]), [backend], t.upload_bytes)
        downloads = CounterMetricFamily(f"{p}_backend_downloads", "Ranged GETs of chunks from "
                                        "the backend, by outcome (ok, not_found, error)",
                                        labels=["backend", "outcome"])
        for outcome in sorted({*DOWNLOAD_OUTCOMES, *t.downloads}):
            downloads.add_metric([backend, outcome], t.downloads.get(outcome, 0))
        yield downloads
        yield _labelled(CounterMetricFamily(f"{p}_backend_download_bytes", "Bytes read from "
                        "the backend", labels=["backend"]), [backend], t.download_bytes)
        yield _labelled(CounterMetricFamily(f"{p}_backend_retries", "Transient backend "
                        "failures retried", labels=["backend"]), [backend], t.retries)


class RingCollector(Collector):
    """Per-LU ring counters (`RingStats`) and whether each serve loop is alive."""

    def __init__(self, prefix: str, lus: Callable[[], Iterable[LuInfo]]) -> None:
        self.p = prefix
        self.lus = lus

    def collect(self) -> Iterator[Metric]:
        p = self.p
        labels = ["lu", "device"]
        serving = GaugeMetricFamily(f"{p}_lu_serving", "1 while the LU's ring is served, 0 "
                                    "if its serve loop died", labels=labels)
        families = {
            "tmrs": CounterMetricFamily(f"{p}_tcmu_tmrs", "Task management requests (aborts, "
                                        "resets) seen on the ring", labels=labels),
            "aborted": CounterMetricFamily(f"{p}_tcmu_aborted", "Commands aborted before they "
                                           "ran", labels=labels),
            "engine_errors": CounterMetricFamily(f"{p}_tcmu_engine_errors", "Commands the "
                                                 "engine failed on (HARDWARE ERROR sent)",
                                                 labels=labels),
            "bad_entries": CounterMetricFamily(f"{p}_tcmu_bad_entries", "Ring entries with "
                                               "bad contents", labels=labels),
            "malformed": CounterMetricFamily(f"{p}_tcmu_malformed", "Passes stopped by a "
                                             "malformed ring", labels=labels),
        }
        for lu in self.lus():
            values = [lu.name, lu.kind]
            ok = lu.device.running and lu.device.error is None
            serving.add_metric(values, 1 if ok else 0)
            stats = lu.device.ring.stats
            for attr, family in families.items():
                family.add_metric(values, getattr(stats, attr))
        yield serving
        yield from families.values()


class DaemonCollector(Collector):
    """Sessions from configfs and the daemon's own gauges (volumes, cartridges)."""

    def __init__(
        self,
        prefix: str,
        sessions: Callable[[], int | None],
        gauges: dict[str, tuple[str, Callable[[], float]]],
    ) -> None:
        self.p = prefix
        self.sessions = sessions
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        count = self.sessions()
        # Unreadable configfs: no sample rather than a misleading 0.
        family = GaugeMetricFamily(f"{self.p}_iscsi_sessions", "iSCSI sessions logged in to "
                                   "the target (configfs)")
        if count is not None:
            family.add_metric([], count)
        yield family
        for name, (doc, read) in self.gauges.items():
            try:
                value = read()
            except Exception as exc:  # a scrape must not fail on one gauge
                log.warning("metric %s_%s: %s", self.p, name, exc)
                continue
            yield GaugeMetricFamily(f"{self.p}_{name}", doc, value=value)


def _labelled(family: CounterMetricFamily, labels: list[str], value: float) -> Metric:
    family.add_metric(labels, value)
    return family

"""Metrics: the documented names exist with the product's prefix, the counters behind
them count, and the ring hook records opcode, outcome and latency per command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from handlers.scsi import InMemoryChanger, MediumChanger, TapeDrive, changer_identity
from handlers.scsi import tape_drive_identity as drive_identity
from handlers.tcmu import FdDoorbell, Ring, TcmuDevice
from handlers.tcmu.fake_kernel import FakeKernel
from thur.cloud import (
    BackendTransient,
    LocalBackend,
    PackIndex,
    RetryPolicy,
    TierConfig,
    TieredPool,
)
from thur.metrics import opcode_names, outcome_name, sense_key
from thur.observe import Observability
from thur.pool import (
    BackpressureTimeout,
    Codec,
    CompressionPolicy,
    LocalStore,
    ManualClock,
    PoolConfig,
)

# Every name docs/OPERATIONS.md lists, without the product prefix (counters as exposed).
DOCUMENTED = [
    "pool_used_bytes",
    "pool_capacity_bytes",
    "pool_pinned_bytes",
    "pool_chunks",
    "pool_evictions_total",
    "pool_evicted_bytes_total",
    "pool_backpressure_waits_total",
    "pool_backpressure_wait_seconds_total",
    "pool_backpressure_timeouts_total",
    "dedup_hits_total",
    "logical_bytes_total",
    "unique_bytes_total",
    "backend_uploads_total",
    "backend_upload_bytes_total",
    "backend_downloads_total",
    "backend_download_bytes_total",
    "backend_retries_total",
    "scsi_command_seconds_bucket",
    "scsi_command_seconds_count",
    "scsi_command_seconds_sum",
    "lu_serving",
    "tcmu_tmrs_total",
    "tcmu_aborted_total",
    "tcmu_engine_errors_total",
    "tcmu_bad_entries_total",
    "tcmu_malformed_total",
    "iscsi_sessions",
]


class FlakyBackend(LocalBackend):
    """Fails the first `failures` PUTs with a transient error (the tier retries)."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root, fsync=False)
        self.failures = failures

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if self.failures:
            self.failures -= 1
            raise BackendTransient("503 slow down")
        super().put(key, data, if_absent=if_absent)


@pytest.fixture
def tier(tmp_path: Path) -> Iterator[TieredPool]:
    clock = ManualClock()
    for d in ("pool", "bucket"):
        (tmp_path / d).mkdir()
    store = LocalStore(
        PoolConfig(tmp_path / "pool", budget_bytes=1 << 20, disk_free_floor=0, fsync=False,
                   max_wait=0.0, compression=CompressionPolicy(Codec.NONE)),
        clock=clock,
    )
    pool = TieredPool(
        store, FlakyBackend(tmp_path / "bucket", failures=1),
        PackIndex(tmp_path / "pool" / "index.sqlite"),
        TierConfig(pack_target=20_000, workers=2, retry=RetryPolicy(attempts=3)), clock=clock,
    )
    yield pool
    pool.close()
    store.close()


def sample_names(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def drive_on_ring(obs: Observability) -> tuple[FakeKernel, TcmuDevice]:
    engine = TapeDrive(drive_identity("TD0001"))
    fake = FakeKernel()
    device = TcmuDevice(fake.map, FdDoorbell(fake.handler_fd), engine, name="fake",
                        on_command=obs.listener(engine))
    obs.add_lu("thurvtl_drive0", engine, device)
    return fake, device


@pytest.mark.parametrize("product", ["thurvtl", "thurvsa"])
def test_documented_names_exist_with_the_product_prefix(
    tier: TieredPool, product: str
) -> None:
    obs = Observability(product, None, tier=tier, target_iqn="iqn.2026-11.io.thur:x",
                        info=dict, configfs_root=Path("/nonexistent"))
    obs.metrics.scsi.labels("tape", "INQUIRY", "GOOD").observe(0.001)
    tier.put(b"x" * 1000)
    tier.flush()
    fake, device = drive_on_ring(obs)
    names = sample_names(obs.metrics.registry)
    for name in DOCUMENTED:
        # iscsi_sessions has no sample when configfs is unreadable, as here.
        if name != "iscsi_sessions":
            assert f"{product}_{name}" in names, name
    ours = {n for n in names if not n.startswith(("process_", "python_"))}
    assert all(n.startswith(product + "_") for n in ours), ours
    assert "process_resident_memory_bytes" in names
    device.close()
    fake.close()


def test_pool_and_backend_counters(tier: TieredPool) -> None:
    reg = Observability("thurvsa", None, tier=tier, target_iqn="iqn.2026-11.io.thur:x",
                        info=dict).metrics.registry
    chunks = [bytes([i]) * 4000 for i in range(3)]
    for c in chunks:
        tier.put(c)
    tier.put(chunks[0])  # a dedup hit
    tier.flush()  # the first PUT fails transiently and is retried
    backend = tier.backend.name

    def value(name: str, **labels: str) -> float | None:
        return reg.get_sample_value(f"thurvsa_{name}", labels)

    assert value("logical_bytes_total") == 16000
    assert value("unique_bytes_total") == 12000
    assert value("dedup_hits_total") == 1
    assert value("backend_retries_total", backend=backend) == 1
    assert value("backend_uploads_total", backend=backend, kind="pack", outcome="ok") == 1
    assert value("backend_uploads_total", backend=backend, kind="index", outcome="ok") == 1
    assert value("pool_chunks") == 3
    # Evict everything (now durable) by filling the pool, then read a chunk back.
    for i in range(400):
        tier.put(bytes([i % 256, i // 256, 7]) * 1333)
        if i % 50 == 49:
            tier.flush()  # durable chunks may be evicted, pinned ones not
    assert (value("pool_evictions_total") or 0) > 0
    assert tier.get(chunk_id_of(chunks[1])) == chunks[1]
    assert value("backend_downloads_total", backend=backend, outcome="ok") == 1
    assert value("backend_downloads_total", backend=backend, outcome="error") == 0
    assert value("backend_download_bytes_total", backend=backend) == 4000  # Codec.NONE


def chunk_id_of(data: bytes) -> bytes:
    from thur.pool import chunk_id

    return chunk_id(data)


def test_backpressure_counters(tier: TieredPool) -> None:
    reg = Observability("thurvtl", None, tier=tier, target_iqn="iqn.2026-11.io.thur:x",
                        info=dict).metrics.registry
    # Nothing is uploaded (no flush), so the 1 MiB pool fills with pinned chunks and
    # the next write waits (max_wait 0: at once refused).
    with pytest.raises(BackpressureTimeout):
        for i in range(400):
            tier.put(bytes([i % 256, i // 256, 7]) * 1333)
    assert reg.get_sample_value("thurvtl_pool_backpressure_waits_total") == 1
    assert reg.get_sample_value("thurvtl_pool_backpressure_timeouts_total") == 1
    assert reg.get_sample_value("thurvtl_pool_pinned_bytes") > 0


def test_ring_hook_records_opcode_outcome_and_latency(tier: TieredPool) -> None:
    from thur.config import HttpConfig, Portal

    obs = Observability("thurvtl", HttpConfig(Portal("127.0.0.1", 0)), tier=tier,
                        target_iqn="iqn.2026-11.io.thur:x", info=dict)
    engine = TapeDrive(drive_identity("TD0001"))
    fake = FakeKernel()
    ring = Ring(fake.map, engine, on_command=obs.listener(engine))
    fake.submit(bytes(6))  # TEST UNIT READY: the power-on unit attention
    fake.submit(bytes(6))  # then no medium: NOT READY
    fake.submit(bytes([0x12, 0, 0, 0, 96, 0]), data_in_len=96)  # INQUIRY: GOOD
    fake.submit(bytes([0x12, 0, 0, 0, 96, 0]), data_in_len=96)
    fake.submit(bytes([0xC7]) + bytes(9))  # unsupported: ILLEGAL REQUEST
    ring.process()
    fake.completions()
    reg = obs.metrics.registry

    def count(opcode: str, outcome: str) -> float | None:
        return reg.get_sample_value(
            "thurvtl_scsi_command_seconds_count",
            {"device": "tape", "opcode": opcode, "outcome": outcome},
        )

    assert count("TEST_UNIT_READY", "UNIT_ATTENTION") == 1
    assert count("TEST_UNIT_READY", "NOT_READY") == 1
    assert count("INQUIRY", "GOOD") == 2
    assert count("0xC7", "ILLEGAL_REQUEST") == 1
    total = reg.get_sample_value(
        "thurvtl_scsi_command_seconds_sum",
        {"device": "tape", "opcode": "INQUIRY", "outcome": "GOOD"},
    )
    assert total is not None and total >= 0
    ring.close()
    fake.close()


def test_hook_off_when_http_is_off(tier: TieredPool) -> None:
    obs = Observability("thurvtl", None, tier=tier, target_iqn="iqn.2026-11.io.thur:x",
                        info=dict)
    assert obs.listener(TapeDrive(drive_identity("TD0001"))) is None


def test_a_failing_hook_never_fails_the_command() -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("metrics broke")

    engine = TapeDrive(drive_identity("TD0001"))
    fake = FakeKernel()
    ring = Ring(fake.map, engine, on_command=boom)
    cmd = fake.submit(bytes([0x12, 0, 0, 0, 36, 0]), data_in_len=36)
    ring.process()
    assert fake.completions()[cmd].status == 0
    ring.close()
    fake.close()


def test_opcode_names_follow_the_device_class() -> None:
    drive = TapeDrive(drive_identity("TD0001"))
    model = InMemoryChanger(slots=2, drives=[drive], mail_slots=1)
    changer = MediumChanger(changer_identity("TL0001"), model)
    assert opcode_names(drive)[0x1B] == "LOAD_UNLOAD"
    assert opcode_names(changer)[0x2B] == "POSITION_TO_ELEMENT"
    assert opcode_names(drive)[0xA3] == "MAINTENANCE_IN"
    assert 0xA5 not in opcode_names(drive)


def test_outcome_names() -> None:
    fixed = bytes([0x70, 0, 0x06]) + bytes(15)
    descriptor = bytes([0x72, 0x02, 0x04, 0x01]) + bytes(4)
    assert sense_key(fixed) == 6 and sense_key(descriptor) == 2
    assert outcome_name(0x02, fixed) == "UNIT_ATTENTION"
    assert outcome_name(0x02, descriptor) == "NOT_READY"
    assert outcome_name(0x02, b"") == "CHECK_CONDITION"
    assert outcome_name(0x00, b"") == "GOOD"
    assert outcome_name(0x08, b"") == "BUSY"
    assert outcome_name(0x40, b"") == "TASK_ABORTED"

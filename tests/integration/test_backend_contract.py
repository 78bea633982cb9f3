"""The backend contract, one suite, run against local, S3, GCS and Azure (real servers)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from thur.cloud import (
    AlreadyExists,
    BackendPermanent,
    BackendTransient,
    BucketMissing,
    NotFound,
    ObjectInfo,
    RetryPolicy,
    check,
)

from .conftest import Target


def test_put_get_ranges_head_delete(target: Target) -> None:
    be = target.backend()
    be.put("packs/ab/obj", b"0123456789")
    assert be.get("packs/ab/obj") == b"0123456789"
    assert be.get("packs/ab/obj", 3, 4) == b"3456"
    assert be.get("packs/ab/obj", 8) == b"89"
    assert be.get("packs/ab/obj", 0, 1) == b"0"
    assert be.get("packs/ab/obj", 9, 1) == b"9"
    assert be.get("packs/ab/obj", 3, 0) == b""
    assert be.head("packs/ab/obj") == ObjectInfo("packs/ab/obj", 10)
    be.put("packs/ab/obj", b"new")  # a plain put overwrites
    assert be.get("packs/ab/obj") == b"new"
    be.delete("packs/ab/obj")
    be.delete("packs/ab/obj")  # idempotent
    with pytest.raises(NotFound):
        be.get("packs/ab/obj")
    with pytest.raises(NotFound):
        be.head("packs/ab/obj")


def test_reads_past_the_end_are_short_like_a_file(target: Target) -> None:
    # The tier compares lengths itself; what it must never get is an error
    # that looks transient (and is retried) for a range the object lacks.
    # Reads go through the tier's retry policy, as in the product: fake-gcs-server
    # closes its connection after answering 416, and the next request on that pooled
    # connection can meet a reset (an honest transient). A 416 taken for a transient
    # error would still fail, on every attempt.
    be = target.backend()
    be.put("obj", b"0123456789")
    policy, sleeps = RetryPolicy(attempts=3, initial=0.01), []

    def read(start: int, length: int | None = None) -> bytes:
        return policy.call(lambda: be.get("obj", start, length), sleeps.append)

    assert read(3, 100) == b"3456789"
    assert read(10) == b""
    assert read(10, 5) == b""


def test_binary_round_trip_of_a_pack_sized_object(target: Target) -> None:
    data = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, every byte value
    be = target.backend()
    be.put("packs/big", data)
    assert be.head("packs/big").size == len(data)
    assert be.get("packs/big") == data
    assert be.get("packs/big", 700_001, 12_345) == data[700_001 : 700_001 + 12_345]
    assert be.get("packs/big", len(data) - 52, 52) == data[-52:]


def test_conditional_create_of_a_large_object(target: Target) -> None:
    # Above 8 MiB google-cloud-storage switches to a resumable upload (a
    # session, then the data): ifGenerationMatch must hold on that path too.
    data = bytes(range(256)) * (36 * 1024) + b"!"  # 9 MiB + 1
    be = target.backend()
    be.put("packs/large", data, if_absent=True)
    with pytest.raises(AlreadyExists):
        be.put("packs/large", b"other", if_absent=True)
    assert be.head("packs/large").size == len(data)
    assert be.get("packs/large", 8 * 1024 * 1024, 1000) == data[8 << 20 : (8 << 20) + 1000]
    assert be.get("packs/large") == data


def test_missing_object_is_not_found(target: Target) -> None:
    be = target.backend()
    with pytest.raises(NotFound) as e:
        be.get("nothing/here")
    assert e.value.key == "nothing/here"
    with pytest.raises(NotFound):
        be.get("nothing/here", 5, 5)
    with pytest.raises(NotFound):
        be.head("nothing/here")
    be.delete("nothing/here")  # deleting an absent object is not an error


def test_conditional_create(target: Target) -> None:
    be = target.backend()
    assert be.conditional_create
    be.put("index/x", b"first", if_absent=True)
    with pytest.raises(AlreadyExists):
        be.put("index/x", b"second", if_absent=True)
    assert be.get("index/x") == b"first"
    be.delete("index/x")
    be.put("index/x", b"third", if_absent=True)  # absent again after delete
    assert be.get("index/x") == b"third"


def test_conditional_create_race_has_one_winner(target: Target) -> None:
    be = target.backend()
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def racer(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            be.put("index/race", f"writer {i}".encode(), if_absent=True)
            outcome = f"won {i}"
        except AlreadyExists:
            outcome = "lost"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [r for r in results if r.startswith("won")]
    assert len(results) == 8 and len(winners) == 1, results
    assert be.get("index/race") == f"writer {winners[0].split()[1]}".encode()


def test_list_by_prefix(target: Target) -> None:
    be = target.backend()
    for key in ("packs/aa/1", "packs/ab/2", "index/3", "check/4"):
        be.put(key, b"x" * len(key))
    assert {o.key for o in be.list("packs/")} == {"packs/aa/1", "packs/ab/2"}
    assert {o.key for o in be.list("packs/a")} == {"packs/aa/1", "packs/ab/2"}
    assert {o.key for o in be.list("packs/ab")} == {"packs/ab/2"}
    assert {o.key for o in be.list("")} == {"packs/aa/1", "packs/ab/2", "index/3", "check/4"}
    assert list(be.list("index/")) == [ObjectInfo("index/3", 7)]
    assert list(be.list("nothing/")) == []


def test_prefixes_isolate_backends_sharing_a_bucket(cloud_target: Target) -> None:
    a = cloud_target.backend(prefix=cloud_target.prefix + "/a")
    b = cloud_target.backend(prefix=cloud_target.prefix + "/b")
    a.put("packs/1", b"a")
    b.put("packs/1", b"bb")
    assert [o.key for o in a.list("")] == ["packs/1"]
    assert a.get("packs/1") == b"a" and b.head("packs/1").size == 2


def test_list_follows_pagination(cloud_target: Target) -> None:
    # A small page size makes the SDK follow continuation tokens over many pages.
    be = cloud_target.backend(list_page_size=7)
    keys = {f"packs/{i:02x}/{i}" for i in range(40)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: be.put(k, k.encode()), keys))
    be.put("other/1", b"x")
    listed = [o.key for o in be.list("packs/")]
    assert len(listed) == len(keys) and set(listed) == keys


def test_list_beyond_a_thousand_keys_with_the_service_page_size(cloud_target: Target) -> None:
    # 1000 is S3's and GCS's page maximum: a listing must not stop there.
    be = cloud_target.backend()
    keys = {f"index/{i:04d}" for i in range(1003)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: be.put(k, b""), keys))
    listed = [o.key for o in be.list("index/")]
    assert len(listed) == len(keys) and set(listed) == keys


def test_missing_bucket_is_permanent_with_a_clear_message(target: Target) -> None:
    bucket, make = target.missing_bucket()
    if target.kind == "local":
        with pytest.raises(BackendPermanent, match="not a directory"):
            make()
        return
    be = make()
    ops = {
        "list": lambda: list(be.list("packs/")),
        "put": lambda: be.put("k", b"v"),
        "put if absent": lambda: be.put("k", b"v", if_absent=True),
        "get": lambda: be.get("k"),
        "ranged get": lambda: be.get("k", 1, 2),
        "head": lambda: be.head("k"),
        "delete": lambda: be.delete("k"),
    }
    for name, op in ops.items():
        with pytest.raises(BucketMissing, match=bucket) as e:
            op()
        assert isinstance(e.value, BackendPermanent), name
        assert "does not exist" in str(e.value), name
    report = check(be)
    assert not report.ok
    assert [(s.name, s.ok) for s in report.steps] == [("list", False)]
    assert "bucket missing" in report.steps[0].message and bucket in str(report)


def test_no_retry_for_a_missing_bucket(cloud_target: Target) -> None:
    be = cloud_target.missing_bucket()[1]()
    calls: list[int] = []
    sleeps: list[float] = []

    def attempt() -> None:
        calls.append(1)
        be.put("k", b"v")

    with pytest.raises(BucketMissing):
        RetryPolicy().call(attempt, sleeps.append)
    assert len(calls) == 1 and sleeps == []


def test_unreachable_endpoint_is_transient(cloud_target: Target) -> None:
    # Nothing listens on port 9 of 127.0.0.1: connection refused, retried.
    kind = cloud_target.kind
    dead = "http://127.0.0.1:9"
    overrides: dict[str, object] = {
        "s3": {"endpoint_url": dead},
        "gcs": {"endpoint": dead},
        "azure": {"connection_string": None, "account_url": f"{dead}/devstoreaccount1"},
    }[kind]  # type: ignore[assignment]
    be = cloud_target.backend(**overrides)
    for op in (lambda: be.put("k", b"v"), lambda: be.get("k"), lambda: list(be.list(""))):
        with pytest.raises(BackendTransient):
            op()
    sleeps: list[float] = []
    with pytest.raises(BackendTransient):
        RetryPolicy(attempts=3, initial=0.01).call(lambda: be.head("k"), sleeps.append)
    assert sleeps == [0.01, 0.02]


def test_check_passes_and_cleans_up(target: Target) -> None:
    be = target.backend()
    report = check(be)
    assert report.ok, str(report)
    assert [s.name for s in report.steps] == ["list", "write", "read", "delete"]
    assert list(be.list("check/")) == []

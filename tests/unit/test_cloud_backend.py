"""The backend contract, run against the `local` backend; retry policy; check()."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from thur.cloud import (
    AlreadyExists,
    BackendPermanent,
    BackendTransient,
    LocalBackend,
    NotFound,
    ObjectInfo,
    RetryPolicy,
    check,
)


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    (tmp_path / "bucket").mkdir()
    return LocalBackend(tmp_path / "bucket")


def test_put_get_ranges_head_delete(backend: LocalBackend) -> None:
    backend.put("packs/ab/obj", b"0123456789")
    assert backend.get("packs/ab/obj") == b"0123456789"
    assert backend.get("packs/ab/obj", 3, 4) == b"3456"
    assert backend.get("packs/ab/obj", 8) == b"89"
    assert backend.head("packs/ab/obj") == ObjectInfo("packs/ab/obj", 10)
    backend.put("packs/ab/obj", b"new")  # plain put overwrites
    assert backend.get("packs/ab/obj") == b"new"
    backend.delete("packs/ab/obj")
    backend.delete("packs/ab/obj")  # idempotent
    for fn in (lambda: backend.get("packs/ab/obj"), lambda: backend.head("packs/ab/obj")):
        with pytest.raises(NotFound):
            fn()
    with pytest.raises(NotFound):
        backend.head("packs/ab")  # a directory is not an object


def test_conditional_create_is_atomic(backend: LocalBackend) -> None:
    results: list[str] = []

    def racer(i: int) -> None:
        try:
            backend.put("index/x", f"writer {i}".encode(), if_absent=True)
            results.append("won")
        except AlreadyExists:
            results.append("lost")

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost"] * 7 + ["won"]
    assert not list((backend.root / ".tmp").iterdir())


def test_list_by_prefix(backend: LocalBackend) -> None:
    for key in ("packs/aa/1", "packs/ab/2", "index/3", "check/4"):
        backend.put(key, b"x" * len(key))
    assert {o.key for o in backend.list("packs/")} == {"packs/aa/1", "packs/ab/2"}
    assert {o.key for o in backend.list("packs/a")} == {"packs/aa/1", "packs/ab/2"}
    assert {o.key for o in backend.list("packs/ab")} == {"packs/ab/2"}
    assert {o.key for o in backend.list("")} == {"packs/aa/1", "packs/ab/2", "index/3", "check/4"}
    assert [o.size for o in backend.list("index/")] == [7]
    assert list(backend.list("nothing/")) == []


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", ".tmp/x"])
def test_keys_cannot_escape(backend: LocalBackend, key: str) -> None:
    with pytest.raises(ValueError):
        backend.put(key, b"x")


def test_missing_root_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(BackendPermanent):
        LocalBackend(tmp_path / "nope")


class Flaky:
    """Fails `failures` times with `error`, then succeeds (a failure-mode double)."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_retry_delays_are_1_to_30_seconds_over_10_attempts() -> None:
    assert RetryPolicy().delays() == [1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_retry_recovers_from_transient_errors() -> None:
    sleeps: list[float] = []
    fn = Flaky(3, BackendTransient("503"))
    assert RetryPolicy().call(fn, sleeps.append) == "ok"
    assert fn.calls == 4 and sleeps == [1, 2, 4]


def test_retry_gives_up_after_ten_attempts() -> None:
    sleeps: list[float] = []
    fn = Flaky(100, BackendTransient("503"))
    with pytest.raises(BackendTransient):
        RetryPolicy().call(fn, sleeps.append)
    assert fn.calls == 10 and sum(sleeps) == 151


@pytest.mark.parametrize("error", [BackendPermanent("403"), NotFound("k")])
def test_no_retry_for_permanent_errors(error: Exception) -> None:
    sleeps: list[float] = []
    fn = Flaky(1, error)
    with pytest.raises(type(error)):
        RetryPolicy().call(fn, sleeps.append)
    assert fn.calls == 1 and sleeps == []


def test_check_passes_on_a_working_backend(backend: LocalBackend) -> None:
    report = check(backend)
    assert report.ok, str(report)
    assert [s.name for s in report.steps] == ["list", "write", "read", "delete"]
    assert list(backend.list("check/")) == []


class ReadOnly(LocalBackend):
    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        raise BackendPermanent("AccessDenied: no s3:PutObject on bucket")


class Lying(LocalBackend):
    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        return b"garbage"


def test_check_names_the_failing_step(backend: LocalBackend) -> None:
    report = check(ReadOnly(backend.root))
    assert not report.ok
    assert [(s.name, s.ok) for s in report.steps] == [("list", True), ("write", False)]
    assert "permissions" in report.steps[1].message and "AccessDenied" in str(report)
    report = check(Lying(backend.root))
    assert [(s.name, s.ok) for s in report.steps] == [
        ("list", True),
        ("write", True),
        ("read", False),
        ("delete", True),
    ]


def test_open_backend(tmp_path: Path) -> None:
    from thur.cloud import open_backend

    be = open_backend("local", {"path": tmp_path, "fsync": False})
    assert isinstance(be, LocalBackend) and not be.fsync
    with pytest.raises(ValueError, match="unknown backend kind"):
        open_backend("ftp", {})
    with pytest.raises(TypeError):
        open_backend("s3", {"bucket": "b", "no_such_option": 1})

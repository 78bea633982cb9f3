"""apply()/teardown() against an in-memory kernel: idempotence, crash recovery, exactness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from configfs import (
    ConflictError,
    DbRootError,
    ExecutionError,
    IscsiTarget,
    Ledger,
    LoopbackTarget,
    TargetState,
    TeardownError,
    UserBackstore,
    apply,
    preview,
    teardown,
)
from configfs.ledger import DONE, PENDING, Record
from configfs.paths import Kind, ObjKey
from configfs.plan import Node

IQN = "iqn.2026-01.io.thur:vtl"
NAA = "naa.5001405000000001"


class FakeKernel:
    """Just enough kernel: objects by key, backstores at an hba, parents required."""

    def __init__(self) -> None:
        self.objects: dict[ObjKey, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.next_hba = 0
        self.fail: set[tuple[str, str]] = set()  # (action, str(key))
        self.fail_after_create: set[str] = set()  # object made, then an error

    def _check(self, action: str, key: ObjKey) -> None:
        if (action, str(key)) in self.fail:
            raise ExecutionError(f"injected failure: {action} {key}")

    def exists(self, key: ObjKey, record: Record | None) -> bool:
        obj = self.objects.get(key)
        if obj is None:
            return False
        if key.kind is Kind.BACKSTORE:
            return record is not None and obj["hba"] == record.hba
        return True

    def allocate(self, node: Node) -> dict[str, Any]:
        if node.key.kind is Kind.BACKSTORE:
            self.next_hba += 1
            return {"hba": self.next_hba}
        return {}

    def create(self, node: Node, record: Record, ledger: Ledger) -> None:
        self._check("create", node.key)
        assert node.key not in self.objects, f"create over existing {node.key}"
        for dep in node.deps:
            assert dep in self.objects, f"{node.key} created before {dep}"
        self.calls.append(f"create {node.key}")
        self.objects[node.key] = {"hba": record.hba, "live": dict(node.live)}
        if str(node.key) in self.fail_after_create:
            raise ExecutionError(f"injected failure after creating {node.key}")

    def update(self, node: Node, record: Record, ledger: Ledger) -> None:
        self._check("update", node.key)
        self.calls.append(f"update {node.key}")
        self.objects[node.key]["live"] = dict(node.live)

    def delete(self, record: Record) -> None:
        self._check("delete", record.key)
        self.calls.append(f"delete {record.key}")
        self.objects.pop(record.key, None)

    def enable(self, key: ObjKey) -> None:
        self.calls.append(f"enable {key}")
        self.objects[key]["enabled"] = True


def bs(name: str, **kw: object) -> UserBackstore:
    args: dict[str, object] = {"name": name, "dev_config": f"thur/{name}",
                               "size_bytes": 1 << 30, "wwn_serial": f"SN-{name}"}
    args.update(kw)
    return UserBackstore(**args)  # type: ignore[arg-type]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "config"
    (r / "target" / "core").mkdir(parents=True)
    (r / "target" / "dbroot").write_text("/var/target\n")
    return r


@pytest.fixture
def st(tmp_path: Path) -> TargetState:
    return TargetState(
        db_root=tmp_path / "data" / "lio",
        backstores=[bs("changer0"), bs("tape0", cmd_time_out=14400)],
        iscsi_targets=[IscsiTarget(iqn=IQN, portals=[("127.0.0.1", 3260)],
                                   luns=[(0, "changer0"), (1, "tape0")])],
        loopback_targets=[LoopbackTarget(wwn=NAA, luns=[(0, "tape0")])])


def test_apply_then_reapply_changes_nothing(root: Path, st: TargetState, tmp_path: Path) -> None:
    k = FakeKernel()
    led = Ledger.load(tmp_path / "ledger.json")
    report = apply(st, led, root=root, executor=k)
    assert report.changed and report.done[-1] == f"enable iscsi_tpg:{IQN}/1"
    assert all(r.status == DONE for r in led)
    assert len(led) == len(k.objects) == 10
    assert k.objects[ObjKey(Kind.ISCSI_TPG, (IQN, 1))]["enabled"] is True
    # db_root set first, with the pr/ and alua/ directories the kernel needs
    assert (root / "target" / "dbroot").read_text() == f"{st.db_root}\n"
    assert (st.db_root / "pr").is_dir() and (st.db_root / "alua").is_dir()
    assert led.meta["db_root_previous"] == "/var/target"

    calls = list(k.calls)
    again = apply(st, led, root=root, executor=k)
    assert not again.changed and k.calls == calls
    # and after a daemon restart, from the persisted ledger
    restarted = Ledger.load(tmp_path / "ledger.json")
    assert not apply(st, restarted, root=root, executor=k).changed
    assert not preview(st, restarted, root=root, executor=k)


def test_crash_mid_apply_is_recovered(root: Path, st: TargetState, tmp_path: Path) -> None:
    k = FakeKernel()
    led = Ledger.load(tmp_path / "ledger.json")
    lun = ObjKey(Kind.ISCSI_LUN, (IQN, 1, 1))
    k.fail_after_create.add(str(lun))  # object exists, apply dies before marking it done
    with pytest.raises(ExecutionError, match="injected"):
        apply(st, led, root=root, executor=k)
    on_disk = Ledger.load(tmp_path / "ledger.json")
    assert on_disk.get(lun).status == PENDING  # type: ignore[union-attr]
    assert set(on_disk.snapshot()) == set(k.objects)  # nothing made is unrecorded
    tpg = on_disk.get(ObjKey(Kind.ISCSI_TPG, (IQN, 1)))
    assert tpg is not None and tpg.data["enabled"] is False

    k.fail_after_create.clear()
    k.calls.clear()
    apply(st, on_disk, root=root, executor=k)
    assert f"delete {lun}" in k.calls and f"create {lun}" in k.calls
    assert f"enable iscsi_tpg:{IQN}/1" in k.calls
    assert all(r.status == DONE for r in on_disk)
    assert not apply(st, on_disk, root=root, executor=k).changed


def test_crash_before_create_leaves_pending_record_and_retry_works(
        root: Path, st: TargetState, tmp_path: Path) -> None:
    k = FakeKernel()
    led = Ledger.load(tmp_path / "ledger.json")
    k.fail.add(("create", "backstore:tape0"))
    with pytest.raises(ExecutionError):
        apply(st, led, root=root, executor=k)
    rec = Ledger.load(tmp_path / "ledger.json").get(ObjKey(Kind.BACKSTORE, ("tape0",)))
    assert rec is not None and rec.status == PENDING and rec.hba == 2
    k.fail.clear()
    apply(st, led, root=root, executor=k)
    assert len(led) == len(k.objects) == 10


def test_teardown_removes_exactly_ours(root: Path, st: TargetState, tmp_path: Path) -> None:
    k = FakeKernel()
    foreign = ObjKey(Kind.ISCSI_TARGET, ("iqn.2020-01.com.other:disk",))
    k.objects[foreign] = {}
    led = Ledger.load(tmp_path / "ledger.json")
    apply(st, led, root=root, executor=k)
    k.calls.clear()
    assert teardown(led, root=root, executor=k) == []
    assert list(k.objects) == [foreign]
    assert k.calls[-2:] == ["delete backstore:tape0", "delete backstore:changer0"]
    assert len(Ledger.load(tmp_path / "ledger.json")) == 0
    assert (root / "target" / "dbroot").read_text() == "/var/target\n"  # given back
    assert teardown(led, root=root, executor=k) == []  # nothing left: still fine


def test_teardown_tolerates_gone_objects_and_keeps_failures(
        root: Path, st: TargetState, tmp_path: Path) -> None:
    k = FakeKernel()
    led = Ledger.load(tmp_path / "ledger.json")
    apply(st, led, root=root, executor=k)
    del k.objects[ObjKey(Kind.ISCSI_PORTAL, (IQN, 1, "127.0.0.1:3260"))]  # already gone
    k.fail.add(("delete", f"iscsi_target:{IQN}"))
    with pytest.raises(TeardownError) as exc:
        teardown(led, root=root, executor=k)
    assert exc.value.failures[0].startswith(f"iscsi_target:{IQN}")
    left = Ledger.load(tmp_path / "ledger.json")
    assert [str(r.key) for r in left] == [f"iscsi_target:{IQN}"]
    k.fail.clear()
    teardown(left, root=root, executor=k)
    assert k.objects == {}


def test_two_phase_shutdown(root: Path, st: TargetState, tmp_path: Path) -> None:
    k = FakeKernel()
    led = Ledger.load(tmp_path / "ledger.json")
    apply(st, led, root=root, executor=k)
    teardown(led, root=root, executor=k, backstores=False)
    assert {key.kind for key in k.objects} == {Kind.BACKSTORE}
    assert {r.key.kind for r in led} == {Kind.BACKSTORE}
    assert "db_root" in led.meta
    teardown(led, root=root, executor=k)
    assert k.objects == {} and len(led) == 0


def test_conflict_changes_nothing(root: Path, st: TargetState, tmp_path: Path) -> None:
    k = FakeKernel()
    k.objects[ObjKey(Kind.LOOP_TARGET, (NAA,))] = {}
    led = Ledger.load(tmp_path / "ledger.json")
    with pytest.raises(ConflictError) as exc:
        apply(st, led, root=root, executor=k)
    assert exc.value.paths == [str(root / "target" / "loopback" / NAA)]
    assert k.calls == [] and len(led) == 0


def test_changed_state_via_apply(root: Path, st: TargetState, tmp_path: Path) -> None:
    k = FakeKernel()
    led = Ledger.load(tmp_path / "ledger.json")
    apply(st, led, root=root, executor=k)
    smaller = TargetState(db_root=st.db_root, backstores=[bs("changer0")],
                          iscsi_targets=[IscsiTarget(iqn=IQN, portals=[("127.0.0.1", 3260)],
                                                     luns=[(0, "changer0")])])
    report = apply(smaller, led, root=root, executor=k)
    assert all(line.startswith("delete") for line in report.done)
    assert {str(key) for key in k.objects} == {str(r.key) for r in led}
    assert ObjKey(Kind.BACKSTORE, ("tape0",)) not in k.objects


def test_db_root_refused(root: Path, st: TargetState, tmp_path: Path) -> None:
    dbroot = root / "target" / "dbroot"
    dbroot.unlink()
    dbroot.mkdir()  # writing it fails like the kernel's EINVAL when devices exist
    (root / "target" / "core" / "fileio_0" / "other").mkdir(parents=True)
    dbroot_text = root / "target" / "dbroot"
    k = FakeKernel()
    led = Ledger.load(tmp_path / "ledger.json")

    class Fs:
        def read(self, path: Path) -> str:
            return "/etc/target\n" if path == dbroot_text else path.read_text()

        def write(self, path: Path, value: str) -> None:
            raise OSError(22, "Invalid argument")

    with pytest.raises(DbRootError, match="fileio_0/other"):
        apply(st, led, root=root, executor=k, fs=Fs())  # type: ignore[arg-type]
    assert k.calls == []
    report = apply(st, led, root=root, executor=k, fs=Fs(),  # type: ignore[arg-type]
                   allow_foreign_db_root=True)
    assert report.changed and "/etc/target" in report.warnings[0]


def test_backstores_ready_hook_runs_before_any_export(
        root: Path, st: TargetState, tmp_path: Path) -> None:
    k = FakeKernel()
    led = Ledger.load(tmp_path / "ledger.json")
    seen: list[tuple[list[str], list[str]]] = []
    apply(st, led, root=root, executor=k,
          on_backstores_ready=lambda names: seen.append((names, list(k.calls))))
    ((names, calls_then),) = seen
    assert names == ["changer0", "tape0"]
    assert calls_then == ["create backstore:changer0", "create backstore:tape0"]
    seen.clear()
    apply(st, led, root=root, executor=k,
          on_backstores_ready=lambda names: seen.append((names, [])))
    assert seen == [([], [])]  # still called once on a no-op apply

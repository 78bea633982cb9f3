"""The nvmet writer against a temp directory shaped like configfs, through apply() and
teardown(): what it writes, in which order, idempotence, conflicts, only-ours teardown."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from configfs import (
    ConflictError,
    ExecutionError,
    Ledger,
    LoopRef,
    NvmeHost,
    NvmeNamespace,
    NvmePort,
    NvmeSubsystem,
    NvmetOps,
    TargetState,
    apply,
    make_dhchap_secret,
    teardown,
)
from configfs.direct import KernelFs
from configfs.paths import ConfigfsPaths, Kind, ObjKey
from configfs.plan import Node

NQN = "nqn.2026-11.io.thur:vsa"
HOST1 = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"
HOST2 = "nqn.2014-08.org.nvmexpress:uuid:66666666-2222-3333-4444-555555555555"
KEY1 = make_dhchap_secret(bytes(range(32)))
KEY2 = make_dhchap_secret(bytes(range(1, 33)))
CTRL2 = make_dhchap_secret(bytes(range(2, 34)), 1)
UUID1 = "7d3f2b1c-0000-4000-8000-000000000001"
NGUID1 = "7d3f2b1c-0000-0000-0000-000000000001"
WWN = "naa.5001405aaaaaaaaa"

# configfs makes these inside a new directory by itself (default groups, attributes)
DEFAULTS = {
    "subsystems": (["namespaces", "allowed_hosts"], ["attr_allow_any_host", "attr_serial",
                                                     "attr_model"]),
    "namespaces": ([], ["device_path", "device_uuid", "device_nguid", "enable",
                        "revalidate_size"]),
    "ports": (["subsystems", "referrals"], ["addr_trtype", "addr_adrfam", "addr_traddr",
                                            "addr_trsvcid", "addr_tsas", "addr_treq"]),
    "hosts": ([], ["dhchap_key", "dhchap_ctrl_key", "dhchap_hash", "dhchap_dhgroup"]),
}


class FakeConfigfs(KernelFs):
    """A temp dir that behaves like configfs where the writer relies on it: mkdir
    brings the default groups and attribute files, rmdir takes them away and
    refuses while child objects remain; every write is recorded."""

    def __init__(self, auth: bool = True) -> None:
        self.writes: list[tuple[str, str]] = []
        self.auth = auth
        self.refuse: set[str] = set()  # attribute names whose write fails (EINVAL)

    def write(self, path: Path, value: str) -> None:
        if path.name in self.refuse:
            raise OSError(errno.EINVAL, "Invalid argument")
        self.writes.append((path.name, value))
        super().write(path, value)

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        groups, attrs = DEFAULTS.get(path.parent.name, ([], []))
        if path.parent.name == "hosts" and not self.auth:
            attrs = []
        for g in groups:
            (path / g).mkdir()
        for a in attrs:
            (path / a).write_text("")

    def rmdir(self, path: Path) -> None:
        groups, attrs = DEFAULTS.get(path.parent.name, ([], []))
        for g in groups:
            if any((path / g).iterdir()):
                raise OSError(errno.ENOTEMPTY, "Directory not empty")
        for g in groups:
            (path / g).rmdir()
        for a in attrs:
            (path / a).unlink(missing_ok=True)
        super().rmdir(path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "cfg"
    for d in ("nvmet/hosts", "nvmet/subsystems", "nvmet/ports"):
        (r / d).mkdir(parents=True)
    return r


def ops(root: Path, fs: FakeConfigfs, **kw: object) -> NvmetOps:
    return NvmetOps(ConfigfsPaths(root), fs, **kw)  # type: ignore[arg-type]


def state(tmp_path: Path, device: Path, *, hosts: tuple[NvmeHost, ...] = (),
          allowed: tuple[str, ...] = (), tls: bool = False) -> TargetState:
    device.touch()
    ns = NvmeNamespace(nsid=1, device_path=str(device), device_uuid=UUID1,
                       device_nguid=NGUID1)
    sub = NvmeSubsystem(nqn=NQN, serial="0123456789abcdef0123", namespaces=(ns,),
                        ports=(NvmePort(traddr="127.0.0.1", trsvcid=4420, tls=tls),),
                        allowed_hosts=allowed)
    return TargetState(db_root=tmp_path / "db", nvme_hosts=hosts, nvme_subsystems=(sub,))


def test_apply_builds_the_tree_in_kernel_order(root: Path, tmp_path: Path) -> None:
    fs = FakeConfigfs()
    ledger = Ledger(tmp_path / "ledger.json")
    hosts = (NvmeHost(nqn=HOST1, dhchap_key=KEY1),
             NvmeHost(nqn=HOST2, dhchap_key=KEY2, dhchap_ctrl_key=CTRL2,
                      dhchap_dhgroup="ffdhe2048"))
    st = state(tmp_path, tmp_path / "disk", hosts=hosts, allowed=(HOST1, HOST2))
    apply(st, ledger, root=root, executor=ops(root, fs), fs=fs)

    nv = root / "nvmet"
    sub = nv / "subsystems" / NQN
    assert (sub / "attr_serial").read_text() == "0123456789abcdef0123"
    assert (sub / "attr_allow_any_host").read_text() == "0"
    ns = sub / "namespaces" / "1"
    assert (ns / "device_path").read_text() == str(tmp_path / "disk")
    assert (ns / "device_uuid").read_text() == UUID1
    assert (ns / "enable").read_text() == "1"
    assert (nv / "hosts" / HOST1 / "dhchap_key").read_text() == KEY1
    assert (nv / "hosts" / HOST1 / "dhchap_ctrl_key").read_text() == ""
    assert (nv / "hosts" / HOST2 / "dhchap_ctrl_key").read_text() == CTRL2
    assert (nv / "hosts" / HOST2 / "dhchap_dhgroup").read_text() == "ffdhe2048"
    assert (sub / "allowed_hosts" / HOST1).resolve() == (nv / "hosts" / HOST1).resolve()
    port = nv / "ports" / "1"
    assert [(a, v) for a, v in fs.writes if a.startswith("addr_")] == [
        ("addr_trtype", "tcp"), ("addr_adrfam", "ipv4"), ("addr_traddr", "127.0.0.1"),
        ("addr_trsvcid", "4420")]
    assert (port / "subsystems" / NQN).resolve() == sub.resolve()
    # device settings before enable; the port link (the listener) after everything
    names = [a for a, _ in fs.writes]
    assert names.index("device_nguid") < names.index("enable")
    kinds = [r.key.kind for r in ledger]
    assert kinds[-1] is Kind.NVMET_PORT_SUBSYSTEM
    assert ledger.get(ObjKey(Kind.NVMET_PORT_SUBSYSTEM, ("127.0.0.1", 4420, NQN))) \
        .data["port_id"] == 1  # type: ignore[union-attr]
    # The ledger never holds a secret.
    assert KEY1 not in (tmp_path / "ledger.json").read_text()

    fs.writes.clear()
    assert not apply(st, ledger, root=root, executor=ops(root, fs), fs=fs).changed
    assert fs.writes == []


def test_any_host_then_hosts_then_any_again(root: Path, tmp_path: Path) -> None:
    fs = FakeConfigfs()
    ledger = Ledger(tmp_path / "ledger.json")
    sub = root / "nvmet" / "subsystems" / NQN
    apply(state(tmp_path, tmp_path / "d"), ledger, root=root, executor=ops(root, fs), fs=fs)
    assert (sub / "attr_allow_any_host").read_text() == "1"
    hosts = (NvmeHost(nqn=HOST1, dhchap_key=KEY1),)
    report = apply(state(tmp_path, tmp_path / "d", hosts=hosts, allowed=(HOST1,)), ledger,
                   root=root, executor=ops(root, fs), fs=fs)
    # allow_any_host goes to 0 before the host is linked (the kernel insists)
    assert report.done.index(f"update nvmet_subsystem:{NQN} (settings changed)") < \
        report.done.index(f"create nvmet_allowed_host:{NQN}/{HOST1} (new)")
    assert (sub / "attr_allow_any_host").read_text() == "0"
    # the namespace and port were left alone
    assert not any("namespace" in op or "port" in op for op in report.done)
    report = apply(state(tmp_path, tmp_path / "d"), ledger, root=root,
                   executor=ops(root, fs), fs=fs)
    assert report.done.index(f"delete nvmet_allowed_host:{NQN}/{HOST1} (no longer wanted)") \
        < report.done.index(f"update nvmet_subsystem:{NQN} (settings changed)")
    assert (sub / "attr_allow_any_host").read_text() == "1"
    assert not (root / "nvmet" / "hosts" / HOST1).exists()


def test_changed_key_rebuilds_host_and_its_link(root: Path, tmp_path: Path) -> None:
    fs = FakeConfigfs()
    ledger = Ledger(tmp_path / "ledger.json")
    for key in (KEY1, KEY2):
        hosts = (NvmeHost(nqn=HOST1, dhchap_key=key),)
        apply(state(tmp_path, tmp_path / "d", hosts=hosts, allowed=(HOST1,)), ledger,
              root=root, executor=ops(root, fs), fs=fs)
    assert (root / "nvmet" / "hosts" / HOST1 / "dhchap_key").read_text() == KEY2
    assert (root / "nvmet" / "subsystems" / NQN / "allowed_hosts" / HOST1).is_symlink()


def test_teardown_removes_only_ours(root: Path, tmp_path: Path) -> None:
    fs = FakeConfigfs()
    ledger = Ledger(tmp_path / "ledger.json")
    nv = root / "nvmet"
    fs.mkdir(nv / "hosts" / "nqn.2026-11.io.other:h")  # someone else's
    fs.mkdir(nv / "ports" / "1")
    (nv / "ports" / "1" / "addr_trtype").write_text("tcp")
    (nv / "ports" / "1" / "addr_traddr").write_text("127.0.0.1")
    (nv / "ports" / "1" / "addr_trsvcid").write_text("4421")
    hosts = (NvmeHost(nqn=HOST1),)
    apply(state(tmp_path, tmp_path / "d", hosts=hosts, allowed=(HOST1,)), ledger, root=root,
          executor=ops(root, fs), fs=fs)
    ours = ledger.get(ObjKey(Kind.NVMET_PORT, ("127.0.0.1", 4420)))
    assert ours is not None and ours.data["port_id"] == 2  # 1 was taken
    teardown(ledger, root=root, executor=ops(root, fs), fs=fs)
    assert len(ledger) == 0
    assert sorted(p.name for p in (nv / "hosts").iterdir()) == ["nqn.2026-11.io.other:h"]
    assert sorted(p.name for p in (nv / "ports").iterdir()) == ["1"]
    assert list((nv / "subsystems").iterdir()) == []


def test_foreign_namespace_keeps_our_subsystem_and_says_why(root: Path,
                                                            tmp_path: Path) -> None:
    fs = FakeConfigfs()
    ledger = Ledger(tmp_path / "ledger.json")
    apply(state(tmp_path, tmp_path / "d"), ledger, root=root, executor=ops(root, fs), fs=fs)
    fs.mkdir(root / "nvmet" / "subsystems" / NQN / "namespaces" / "9")
    with pytest.raises(Exception, match="namespaces/9"):
        teardown(ledger, root=root, executor=ops(root, fs), fs=fs)
    assert ledger.get(ObjKey(Kind.NVMET_SUBSYSTEM, (NQN,))) is not None


def test_foreign_port_on_our_address_is_a_conflict(root: Path, tmp_path: Path) -> None:
    fs = FakeConfigfs()
    port = root / "nvmet" / "ports" / "5"
    fs.mkdir(port)
    for attr, value in (("trtype", "tcp"), ("traddr", "127.0.0.1"), ("trsvcid", "4420")):
        (port / f"addr_{attr}").write_text(value)
    with pytest.raises(ConflictError, match="already listens on 127.0.0.1:4420"):
        apply(state(tmp_path, tmp_path / "d"), Ledger(tmp_path / "l.json"), root=root,
              executor=ops(root, fs), fs=fs)
    assert list((root / "nvmet" / "subsystems").iterdir()) == []


def test_crash_after_mkdir_recreates_the_namespace(root: Path, tmp_path: Path) -> None:
    fs = FakeConfigfs()
    ledger = Ledger(tmp_path / "ledger.json")
    fs.refuse.add("enable")
    with pytest.raises(ExecutionError, match="refused to enable namespace"):
        apply(state(tmp_path, tmp_path / "d"), ledger, root=root, executor=ops(root, fs),
              fs=fs)
    fs.refuse.clear()
    report = apply(state(tmp_path, tmp_path / "d"), ledger, root=root,
                   executor=ops(root, fs), fs=fs)
    assert f"delete nvmet_namespace:{NQN}/1 (left half-made by an interrupted apply)" \
        in report.done
    assert (root / "nvmet" / "subsystems" / NQN / "namespaces" / "1" / "enable") \
        .read_text() == "1"


def test_tls_port_writes_tsas_and_a_refusal_is_explained(root: Path, tmp_path: Path) -> None:
    fs = FakeConfigfs()
    apply(state(tmp_path, tmp_path / "d", tls=True), Ledger(tmp_path / "l.json"), root=root,
          executor=ops(root, fs), fs=fs)
    assert ("addr_tsas", "tls1.3") in fs.writes
    assert fs.writes.index(("addr_trtype", "tcp")) < fs.writes.index(("addr_tsas", "tls1.3"))
    fs2 = FakeConfigfs()
    fs2.refuse.add("addr_tsas")
    root2 = tmp_path / "cfg2"
    for d in ("nvmet/hosts", "nvmet/subsystems", "nvmet/ports"):
        (root2 / d).mkdir(parents=True)
    with pytest.raises(ExecutionError, match="CONFIG_NVME_TARGET_TCP_TLS"):
        apply(state(tmp_path, tmp_path / "d", tls=True), Ledger(tmp_path / "l2.json"),
              root=root2, executor=ops(root2, fs2), fs=fs2)


def test_auth_asked_of_a_kernel_without_it(root: Path, tmp_path: Path) -> None:
    fs = FakeConfigfs(auth=False)
    hosts = (NvmeHost(nqn=HOST1, dhchap_key=KEY1),)
    with pytest.raises(ExecutionError, match="CONFIG_NVME_TARGET_AUTH"):
        apply(state(tmp_path, tmp_path / "d", hosts=hosts, allowed=(HOST1,)),
              Ledger(tmp_path / "l.json"), root=root, executor=ops(root, fs), fs=fs)


# --- the loopback disk behind a namespace ------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def loop_host(root: Path, sys_root: Path, block: str | None) -> None:
    tpg = root / "target" / "loopback" / WWN / "tpgt_1"
    tpg.mkdir(parents=True)
    (tpg / "address").write_text("3:0:1\n")
    dev = sys_root / "class" / "scsi_device" / "3:0:1:4" / "device"
    (dev / "block").mkdir(parents=True)
    if block:
        (dev / "block" / block).mkdir()


def ns_node(path: str) -> Node:
    return Node(ObjKey(Kind.NVMET_NAMESPACE, (NQN, 5)),
                create={"device_path": path, "device_uuid": UUID1, "device_nguid": NGUID1,
                        "loop": [WWN, 4]})


def test_waits_for_the_loop_disk_and_checks_the_link(root: Path, tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    loop_host(root, sys_root, "sdc")
    clock = Clock()
    links = {"/dev/disk/by-id/wwn-0x6001": "/dev/sdc"}
    o = ops(root, FakeConfigfs(), sys_root=sys_root, clock=clock, sleep=clock.sleep,
            resolve=lambda p: links.get(p, p))
    assert o.loop_block_device(WWN, 4) == "/dev/sdc"
    key = ns_node("x").key
    assert o.wait_for_device(key, "/dev/disk/by-id/wwn-0x6001", [WWN, 4]) == "/dev/sdc"
    assert clock.now == 0
    # the same WWN on another disk (a local iSCSI login) owns the link: refuse
    links["/dev/disk/by-id/wwn-0x6001"] = "/dev/sdd"
    with pytest.raises(ExecutionError, match="points to /dev/sdd, not to the tcm_loop disk"):
        o.wait_for_device(key, "/dev/disk/by-id/wwn-0x6001", [WWN, 4])
    assert clock.now >= o.device_timeout
    with pytest.raises(ExecutionError, match="did not appear"):
        o.wait_for_device(key, "/dev/disk/by-id/wwn-0x7777", [WWN, 4])


def test_resize_rescans_the_disk_then_revalidates(root: Path, tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    loop_host(root, sys_root, "sdc")
    (root / "nvmet" / "subsystems" / NQN / "namespaces" / "5").mkdir(parents=True)
    fs = FakeConfigfs()
    o = ops(root, fs, sys_root=sys_root)
    o.rescan_loop_lun(WWN, 4)
    o.revalidate(NQN, 5)
    assert fs.writes == [("rescan", "1"), ("revalidate_size", "1")]
    assert (sys_root / "class" / "scsi_device" / "3:0:1:4" / "device" / "rescan").read_text() \
        == "1"


def test_namespace_rebuilt_with_its_loop_lun() -> None:
    from configfs import LoopbackTarget, UserBackstore
    from configfs.ledger import DONE, Record
    from configfs.plan import Action, desired_nodes, plan_apply

    bs = UserBackstore(name="b", dev_config="thur/b", size_bytes=1 << 20, wwn_serial="s1",
                       hw_block_size=4096, hw_max_sectors=256)
    ns = NvmeNamespace(nsid=1, device_path="/dev/disk/by-id/wwn-0x6", device_uuid=UUID1,
                       device_nguid=NGUID1, loop=LoopRef(WWN, 0))
    st = TargetState(db_root=Path("/db"), backstores=(bs,),
                     loopback_targets=(LoopbackTarget(wwn=WWN, luns=((0, "b"),)),),
                     nvme_subsystems=(NvmeSubsystem(nqn=NQN, serial="1", namespaces=(ns,)),))
    nodes = desired_nodes(st)
    order = [n.key.kind for n in nodes]
    assert order.index(Kind.LOOP_LUN) < order.index(Kind.NVMET_NAMESPACE)
    records = {n.key: Record(n.key, DONE, n.create_digest, n.live_digest) for n in nodes}
    loop_lun = ObjKey(Kind.LOOP_LUN, (WWN, 1, 0))
    records[loop_lun] = Record(loop_lun, DONE, "stale", "")
    plan = plan_apply(st, records, lambda key, rec: True)
    deleted = [op.key.kind for op in plan.ops if op.action is Action.DELETE]
    assert deleted == [Kind.NVMET_NAMESPACE, Kind.LOOP_LUN]  # the namespace lets go first
    created = [op.key.kind for op in plan.ops if op.action is Action.CREATE]
    assert created == [Kind.LOOP_LUN, Kind.NVMET_NAMESPACE]

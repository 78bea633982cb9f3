"""The pure planner: fresh apply, no-op re-apply, changes, cascades, conflicts, teardown."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from configfs import Chap, IscsiTarget, LoopbackTarget, NodeAcl, TargetState, UserBackstore
from configfs.ledger import DONE, PENDING, Record
from configfs.paths import Kind, ObjKey
from configfs.plan import Action, Plan, desired_nodes, plan_apply, plan_teardown

IQN = "iqn.2026-01.io.thur:vtl"
INIT = "iqn.1993-08.org.debian:01:abcdef"
NAA = "naa.5001405000000001"


def bs(name: str, **kw: object) -> UserBackstore:
    args: dict[str, object] = {"name": name, "dev_config": f"thur/{name}",
                               "size_bytes": 1 << 30, "wwn_serial": f"SN-{name}",
                               "cmd_time_out": 14400}
    args.update(kw)
    return UserBackstore(**args)  # type: ignore[arg-type]


def state(**kw: object) -> TargetState:
    args: dict[str, object] = {
        "db_root": Path("/var/lib/thur/lio"),
        "backstores": [bs("changer0"), bs("tape0")],
        "iscsi_targets": [IscsiTarget(iqn=IQN, portals=[("127.0.0.1", 3260)],
                                      luns=[(0, "changer0"), (1, "tape0")])],
        "loopback_targets": [LoopbackTarget(wwn=NAA, luns=[(0, "tape0")])],
    }
    args.update(kw)
    return TargetState(**args)  # type: ignore[arg-type]


def key(kind: Kind, *ident: str | int) -> ObjKey:
    return ObjKey(kind, tuple(ident))


def nothing_exists(k: ObjKey, r: Record | None) -> bool:
    return False


def ours_exist(k: ObjKey, r: Record | None) -> bool:
    """Everything in the ledger is in the kernel; nothing else is."""
    return r is not None


def ledger_after(plan: Plan, st: TargetState) -> dict[ObjKey, Record]:
    """The ledger a successful run of ``plan`` leaves (what apply() would record)."""
    nodes = {n.key: n for n in desired_nodes(st)}
    out: dict[ObjKey, Record] = {}
    for op in plan.ops:
        if op.action is Action.CREATE:
            n = nodes[op.key]
            out[op.key] = Record(op.key, DONE, n.create_digest, n.live_digest)
    return out


def actions(plan: Plan) -> list[tuple[str, str]]:
    return [(op.action.value, str(op.key)) for op in plan.ops]


def test_fresh_apply_creates_parents_first_and_enables_last() -> None:
    p = plan_apply(state(), {}, nothing_exists)
    assert not p.conflicts
    acts = actions(p)
    assert all(a == "create" for a, _ in acts[:-1])
    assert acts[-1] == ("enable", f"iscsi_tpg:{IQN}/1")
    order = [k for _, k in acts]
    assert order.index("backstore:tape0") < order.index(f"iscsi_lun:{IQN}/1/1")
    assert order.index(f"iscsi_target:{IQN}") < order.index(f"iscsi_tpg:{IQN}/1")
    assert order.index(f"iscsi_tpg:{IQN}/1") < order.index(f"iscsi_lun:{IQN}/1/0")
    assert order.index(f"iscsi_lun:{IQN}/1/1") < order.index(f"iscsi_portal:{IQN}/1/127.0.0.1:3260")
    assert order.index(f"loop_tpg:{NAA}/1") < order.index(f"loop_lun:{NAA}/1/0")
    assert len(acts) == 2 + 2 + 2 + 1 + 3 + 1  # backstores, targets, tpgs, portal, luns, enable


def test_second_apply_is_empty() -> None:
    st = state()
    first = plan_apply(st, {}, nothing_exists)
    ledger = ledger_after(first, st)
    again = plan_apply(st, ledger, ours_exist)
    assert again.ops == ()
    assert not again


def test_changed_state_adds_and_removes() -> None:
    st = state()
    ledger = ledger_after(plan_apply(st, {}, nothing_exists), st)
    new = state(backstores=[bs("changer0"), bs("tape0"), bs("tape1")],
                iscsi_targets=[IscsiTarget(iqn=IQN, portals=[("127.0.0.1", 3260)],
                                           luns=[(0, "changer0"), (2, "tape1")])],
                loopback_targets=[])
    acts = actions(plan_apply(new, ledger, ours_exist))
    assert acts == [
        ("delete", f"loop_lun:{NAA}/1/0"),
        ("delete", f"iscsi_lun:{IQN}/1/1"),
        ("delete", f"loop_tpg:{NAA}/1"),
        ("delete", f"loop_target:{NAA}"),
        ("create", "backstore:tape1"),
        ("create", f"iscsi_lun:{IQN}/1/2"),
    ]


def test_live_change_is_an_update_and_create_change_recreates_dependents() -> None:
    st = state()
    ledger = ledger_after(plan_apply(st, {}, nothing_exists), st)
    # qfull_time_out is live: update in place
    live = state(backstores=[bs("changer0"), bs("tape0", qfull_time_out=5)])
    assert actions(plan_apply(live, ledger, ours_exist)) == [
        ("update", "backstore:tape0")]
    # cmd_time_out only before export: rebuild tape0 and both LUNs that export it
    rebuilt = state(backstores=[bs("changer0"), bs("tape0", cmd_time_out=60)])
    acts = actions(plan_apply(rebuilt, ledger, ours_exist))
    assert acts == [
        ("delete", f"loop_lun:{NAA}/1/0"),
        ("delete", f"iscsi_lun:{IQN}/1/1"),
        ("delete", "backstore:tape0"),
        ("create", "backstore:tape0"),
        ("create", f"iscsi_lun:{IQN}/1/1"),
        ("create", f"loop_lun:{NAA}/1/0"),
    ]


def test_chap_and_acl_changes() -> None:
    acl_state = state(iscsi_targets=[IscsiTarget(
        iqn=IQN, portals=[("127.0.0.1", 3260)], luns=[(0, "changer0"), (1, "tape0")],
        acls=[NodeAcl(INIT, chap=Chap("u", "secret123456"))], authentication=True)])
    p = plan_apply(acl_state, {}, nothing_exists)
    order = [k for _, k in actions(p)]
    acl = f"iscsi_acl:{IQN}/1/{INIT}"
    assert order.index(f"iscsi_lun:{IQN}/1/1") < order.index(f"iscsi_mapped_lun:{IQN}/1/{INIT}/1")
    assert order.index(acl) < order.index(f"iscsi_mapped_lun:{IQN}/1/{INIT}/0")
    ledger = ledger_after(p, acl_state)
    new_pw = state(iscsi_targets=[IscsiTarget(
        iqn=IQN, portals=[("127.0.0.1", 3260)], luns=[(0, "changer0"), (1, "tape0")],
        acls=[NodeAcl(INIT, chap=Chap("u", "other-secret1"))], authentication=True)])
    assert actions(plan_apply(new_pw, ledger, ours_exist)) == [("update", acl)]
    # back to demo mode: ACL and mapped LUNs go (children first), the TPG is updated
    acts = actions(plan_apply(state(), ledger, ours_exist))
    assert acts == [
        ("delete", f"iscsi_mapped_lun:{IQN}/1/{INIT}/1"),
        ("delete", f"iscsi_mapped_lun:{IQN}/1/{INIT}/0"),
        ("delete", acl),
        ("update", f"iscsi_tpg:{IQN}/1"),
    ]


def test_digests_hold_no_secrets() -> None:
    st = state(discovery_auth=Chap("disc", "discovery-secret"))
    for node in desired_nodes(st):
        rec = Record(node.key, DONE, node.create_digest, node.live_digest)
        assert "discovery-secret" not in str(rec.to_json())
        assert "discovery-secret" not in repr(node)


def test_missing_objects_are_recreated_with_their_children() -> None:
    st = state()
    ledger = ledger_after(plan_apply(st, {}, nothing_exists), st)
    gone = key(Kind.BACKSTORE, "tape0")
    # after a reboot nothing exists: everything is created again, nothing deleted
    p = plan_apply(st, ledger, nothing_exists)
    assert {a for a, _ in actions(p)} == {"create", "enable"}
    # only the backstore vanished: it and the LUNs that pointed at it are rebuilt
    acts = actions(plan_apply(st, ledger, lambda k, r: r is not None and k != gone))
    assert ("create", "backstore:tape0") in acts
    assert ("delete", f"iscsi_lun:{IQN}/1/1") in acts
    assert ("create", f"loop_lun:{NAA}/1/0") in acts
    assert ("delete", "backstore:tape0") not in acts  # nothing to delete


def test_pending_record_is_rebuilt() -> None:
    st = state()
    ledger = ledger_after(plan_apply(st, {}, nothing_exists), st)
    k = key(Kind.ISCSI_PORTAL, IQN, 1, "127.0.0.1:3260")
    ledger[k] = replace(ledger[k], status=PENDING)
    assert actions(plan_apply(st, ledger, ours_exist)) == [
        ("delete", str(k)), ("create", str(k))]


def test_unenabled_tpg_gets_enabled() -> None:
    st = state()
    ledger = ledger_after(plan_apply(st, {}, nothing_exists), st)
    tpg = key(Kind.ISCSI_TPG, IQN, 1)
    ledger[tpg] = replace(ledger[tpg], data={"enabled": False})
    assert actions(plan_apply(st, ledger, ours_exist)) == [("enable", str(tpg))]


def test_foreign_objects_are_conflicts_not_adopted() -> None:
    st = state()
    foreign = key(Kind.ISCSI_TARGET, IQN)
    p = plan_apply(st, {}, lambda k, r: k == foreign)
    assert p.conflicts == (foreign,)
    assert p.ops == ()


def test_discovery_auth_lifecycle() -> None:
    st = state(discovery_auth=Chap("disc", "discovery-secret"))
    disc = key(Kind.DISCOVERY_AUTH)
    p = plan_apply(st, {}, nothing_exists)
    assert actions(p)[0] == ("create", str(disc))
    ledger = ledger_after(p, st)
    assert not plan_apply(st, ledger, ours_exist)
    assert actions(plan_apply(state(), ledger, ours_exist)) == [("delete", str(disc))]
    # someone else configured discovery auth: we do not take it over
    assert plan_apply(st, {}, lambda k, r: k == disc).conflicts == (disc,)


def test_teardown_order_and_scope() -> None:
    st = state(discovery_auth=Chap("disc", "discovery-secret"))
    ledger = ledger_after(plan_apply(st, {}, nothing_exists), st)
    order = [str(op.key) for op in plan_teardown(ledger).ops]
    assert all(op.action is Action.DELETE for op in plan_teardown(ledger).ops)
    assert order[-1] == "discovery_auth:"
    assert order[-3:-1] == ["backstore:tape0", "backstore:changer0"]
    assert order.index(f"iscsi_portal:{IQN}/1/127.0.0.1:3260") < order.index(f"iscsi_tpg:{IQN}/1")
    assert order.index(f"iscsi_lun:{IQN}/1/0") < order.index(f"iscsi_tpg:{IQN}/1")
    assert order.index(f"iscsi_tpg:{IQN}/1") < order.index(f"iscsi_target:{IQN}")
    assert order.index(f"loop_lun:{NAA}/1/0") < order.index("backstore:tape0")
    keep = [str(op.key) for op in plan_teardown(ledger, backstores=False).ops]
    assert not any(k.startswith("backstore:") for k in keep)
    assert len(keep) == len(order) - 2


def test_lun_numbers_sort_numerically() -> None:
    many = state(iscsi_targets=[IscsiTarget(iqn=IQN, portals=[],
                                            luns=[(n, "tape0") for n in (10, 2, 1)])],
                 loopback_targets=[])
    luns = [str(op.key) for op in plan_apply(many, {}, nothing_exists).ops
            if op.key.kind is Kind.ISCSI_LUN]
    assert luns == [f"iscsi_lun:{IQN}/1/{n}" for n in (1, 2, 10)]

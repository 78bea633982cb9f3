"""Pure planning: desired state + ledger + what exists -> ordered operations.

No I/O here. The caller supplies ``exists(key, record)``; everything else is data,
so every ordering and idempotency rule is unit-tested without a kernel.

Each desired object is a ``Node`` with two settings dicts:
- ``create``: settings fixed at creation (control options, the backstore a LUN points
  at, cmd_time_out which the kernel refuses after export). A change means delete and
  recreate, and so does the recreation of anything the node depends on.
- ``live``: settings the kernel lets us change in place (TPG attributes, CHAP,
  qfull_time_out, write_protect). A change means UPDATE.
The ledger keeps a digest of each dict, which is how a second apply knows nothing
changed without reading (or storing) secrets.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .control import render_attributes, render_control_options
from .ledger import PENDING, Record
from .model import Chap, IscsiTarget, TargetState
from .paths import TPG_TAG, Kind, ObjKey

ExistsFn = Callable[[ObjKey, "Record | None"], bool]


def digest(spec: Mapping[str, Any]) -> str:
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True, slots=True)
class Node:
    key: ObjKey
    deps: tuple[ObjKey, ...] = ()
    create: Mapping[str, Any] = field(default_factory=dict)
    live: Mapping[str, Any] = field(default_factory=dict)

    @property
    def create_digest(self) -> str:
        return digest(self.create)

    @property
    def live_digest(self) -> str:
        return digest(self.live)

    def __repr__(self) -> str:  # live may hold CHAP secrets
        return f"Node({self.key})"


class Action(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ENABLE = "enable"  # iSCSI TPGs go live only once LUNs, ACLs and portals exist


@dataclass(frozen=True, slots=True)
class Op:
    action: Action
    key: ObjKey
    node: Node | None = None
    reason: str = ""

    def __str__(self) -> str:
        tail = f" ({self.reason})" if self.reason else ""
        return f"{self.action.value} {self.key}{tail}"


@dataclass(frozen=True, slots=True)
class Plan:
    ops: tuple[Op, ...] = ()
    conflicts: tuple[ObjKey, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ops)

    def describe(self) -> list[str]:
        return [str(op) for op in self.ops]


def _chap_spec(chap: Chap | None) -> dict[str, str]:
    # "" clears a credential (rtslib writes it as NULL), so dropping CHAP is an update.
    if chap is None:
        return {"userid": "", "password": "", "mutual_userid": "", "mutual_password": ""}
    return {"userid": chap.userid, "password": chap.password,
            "mutual_userid": chap.mutual_userid or "",
            "mutual_password": chap.mutual_password or ""}


def _iscsi_nodes(t: IscsiTarget) -> list[Node]:
    target = ObjKey(Kind.ISCSI_TARGET, (t.iqn,))
    tpg = ObjKey(Kind.ISCSI_TPG, (t.iqn, TPG_TAG))
    attributes = {
        "generate_node_acls": "1" if t.demo_mode else "0",
        "cache_dynamic_acls": "1" if t.demo_mode else "0",
        "demo_mode_write_protect": "0",
        "authentication": "1" if t.authentication else "0",
    }
    nodes = [Node(target),
             Node(tpg, (target,), live={"attributes": attributes, "chap": _chap_spec(t.chap)})]
    lun_keys: dict[int, ObjKey] = {}
    for lun in t.luns:
        key = ObjKey(Kind.ISCSI_LUN, (t.iqn, TPG_TAG, lun.number))
        lun_keys[lun.number] = key
        nodes.append(Node(key, (tpg, ObjKey(Kind.BACKSTORE, (lun.backstore,))),
                          create={"backstore": lun.backstore}))
    for acl in t.acls:
        acl_key = ObjKey(Kind.ISCSI_ACL, (t.iqn, TPG_TAG, acl.initiator_iqn))
        nodes.append(Node(acl_key, (tpg,), live={"chap": _chap_spec(acl.chap)}))
        for m in t.mapped_luns_of(acl):
            key = ObjKey(Kind.ISCSI_MAPPED_LUN, (t.iqn, TPG_TAG, acl.initiator_iqn, m.mapped_lun))
            nodes.append(Node(key, (acl_key, lun_keys[m.tpg_lun]),
                              create={"tpg_lun": m.tpg_lun},
                              live={"write_protect": m.write_protect}))
    for portal in t.portals:
        key = ObjKey(Kind.ISCSI_PORTAL, (t.iqn, TPG_TAG, portal.configfs_name))
        nodes.append(Node(key, (tpg,), create={"ip": portal.ip, "port": portal.port}))
    return nodes


def _nvmet_nodes(state: TargetState) -> list[Node]:
    nodes = [Node(ObjKey(Kind.NVMET_HOST, (h.nqn,)),
                  create={"dhchap_key": h.dhchap_key or "",
                          "dhchap_ctrl_key": h.dhchap_ctrl_key or "",
                          "dhchap_hash": h.dhchap_hash, "dhchap_dhgroup": h.dhchap_dhgroup})
             for h in state.nvme_hosts]
    ports: dict[ObjKey, Node] = {}
    for sub in state.nvme_subsystems:
        skey = ObjKey(Kind.NVMET_SUBSYSTEM, (sub.nqn,))
        nodes.append(Node(skey, create={"serial": sub.serial, "model": sub.model},
                          live={"allow_any_host": "0" if sub.allowed_hosts else "1"}))
        for ns in sub.namespaces:
            deps = [skey]
            if ns.loop is not None:
                deps.append(ObjKey(Kind.LOOP_LUN, (ns.loop.wwn, TPG_TAG, ns.loop.lun)))
            nodes.append(Node(
                ObjKey(Kind.NVMET_NAMESPACE, (sub.nqn, ns.nsid)), tuple(deps),
                create={"device_path": ns.device_path, "device_uuid": ns.device_uuid,
                        "device_nguid": ns.device_nguid,
                        "loop": [ns.loop.wwn, ns.loop.lun] if ns.loop else None}))
        for host in sub.allowed_hosts:
            nodes.append(Node(ObjKey(Kind.NVMET_ALLOWED_HOST, (sub.nqn, host)),
                              (skey, ObjKey(Kind.NVMET_HOST, (host,)))))
        for port in sub.ports:
            pkey = ObjKey(Kind.NVMET_PORT, (port.traddr, port.trsvcid))
            ports[pkey] = Node(pkey, create={"trtype": "tcp", "adrfam": port.adrfam,
                                             "traddr": port.traddr,
                                             "trsvcid": str(port.trsvcid),
                                             "tsas": port.tsas})
            nodes.append(Node(
                ObjKey(Kind.NVMET_PORT_SUBSYSTEM, (port.traddr, port.trsvcid, sub.nqn)),
                (pkey, skey)))
    return nodes + list(ports.values())


def desired_nodes(state: TargetState) -> list[Node]:
    """Every object the state asks for, in creation order."""
    nodes: list[Node] = []
    if state.discovery_auth is not None:
        nodes.append(Node(ObjKey(Kind.DISCOVERY_AUTH, ()),
                          live=_chap_spec(state.discovery_auth)))
    for bs in state.backstores:
        attrs = render_attributes(bs)
        nodes.append(Node(
            ObjKey(Kind.BACKSTORE, (bs.name,)),
            create={"dev_config": bs.dev_config, "control": render_control_options(bs),
                    "wwn_serial": bs.wwn_serial, "cmd_time_out": attrs["cmd_time_out"]},
            live={"qfull_time_out": attrs["qfull_time_out"],
                  "tmr_notification": attrs["tmr_notification"]}))
    for t in state.iscsi_targets:
        nodes.extend(_iscsi_nodes(t))
    nodes.extend(_nvmet_nodes(state))
    for lt in state.loopback_targets:
        target = ObjKey(Kind.LOOP_TARGET, (lt.wwn,))
        tpg = ObjKey(Kind.LOOP_TPG, (lt.wwn, TPG_TAG))
        nodes.append(Node(target))
        nodes.append(Node(tpg, (target,), create={"nexus": lt.nexus_wwn or ""}))
        for lun in lt.luns:
            nodes.append(Node(ObjKey(Kind.LOOP_LUN, (lt.wwn, TPG_TAG, lun.number)),
                              (tpg, ObjKey(Kind.BACKSTORE, (lun.backstore,))),
                              create={"backstore": lun.backstore}))
    nodes.sort(key=lambda n: n.key.sort_key())
    return nodes


def plan_apply(state: TargetState, records: Mapping[ObjKey, Record],
               exists: ExistsFn) -> Plan:
    """Operations turning what we created into what ``state`` asks for.

    - desired, not ours, but present in the kernel -> conflict (never adopted);
    - desired and (not ours or absent)             -> CREATE;
    - ours, present, but pending / create settings changed / a dependency rebuilt
                                                   -> DELETE then CREATE;
    - ours, present, only live settings changed    -> UPDATE;
    - ours and no longer desired                   -> DELETE (absent ones too, so the
      executor drops them from the ledger; it tolerates already-gone objects).
    Deletes run children-first, creates parents-first, TPG enables last.
    """
    nodes = desired_nodes(state)
    wanted = {n.key for n in nodes}
    conflicts = tuple(n.key for n in nodes if n.key not in records and exists(n.key, None))
    if conflicts:
        return Plan(conflicts=conflicts)

    built: set[ObjKey] = set()  # created or recreated by this plan
    creates: list[Op] = []
    deletes: list[Op] = []
    for node in nodes:  # rank order: dependencies are decided before dependents
        rec = records.get(node.key)
        present = rec is not None and exists(node.key, rec)
        rebuilt_deps = [d for d in node.deps if d in built]
        if rec is None or not present:
            reason = "new" if rec is None else "missing from kernel"
            creates.append(Op(Action.CREATE, node.key, node, reason))
            built.add(node.key)
            continue
        reason = ""
        if rec.status == PENDING:
            reason = "left half-made by an interrupted apply"
        elif rec.create_digest != node.create_digest:
            reason = "creation settings changed"
        elif rebuilt_deps:
            reason = f"depends on rebuilt {rebuilt_deps[0]}"
        if reason:
            deletes.append(Op(Action.DELETE, node.key, None, reason))
            creates.append(Op(Action.CREATE, node.key, node, reason))
            built.add(node.key)
        elif rec.live_digest != node.live_digest:
            creates.append(Op(Action.UPDATE, node.key, node, "settings changed"))
    for key in records:
        if key not in wanted:
            deletes.append(Op(Action.DELETE, key, None, "no longer wanted"))

    # A TPG made by an apply that died before its ENABLE is recorded enabled=False.
    to_enable = built | {k for k, r in records.items()
                         if k in wanted and r.data.get("enabled") is False}
    deletes.sort(key=lambda op: op.key.sort_key(), reverse=True)
    enables = [Op(Action.ENABLE, k) for k in sorted(to_enable, key=ObjKey.sort_key)
               if k.kind is Kind.ISCSI_TPG]
    return Plan(ops=tuple(deletes + creates + enables))


def plan_teardown(records: Mapping[ObjKey, Record], *, backstores: bool = True) -> Plan:
    """Delete everything in the ledger, children first, backstores last.

    ``backstores=False`` leaves the TCMU devices (and their ledger entries) alone, so
    the daemon can unexport first, stop its handlers, then remove the devices.
    """
    keys = [k for k in records if backstores or k.kind is not Kind.BACKSTORE]
    keys.sort(key=ObjKey.sort_key, reverse=True)
    return Plan(ops=tuple(Op(Action.DELETE, k, None, "teardown") for k in keys))

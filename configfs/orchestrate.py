"""apply() and teardown(): run a plan against the kernel, keeping the ledger exact.

Write-ahead discipline: a ``pending`` record is persisted before any object is
created, ``done`` after it is configured; a record is removed only after its object
is gone. Whatever point a crash hits, the ledger still lists every object we made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .direct import KernelFs, ensure_db_root, restore_db_root
from .errors import ConfigfsError, ConflictError, ExecutionError, TeardownError
from .ledger import PENDING, Ledger, Record
from .lio import Executor, LioExecutor
from .model import TargetState
from .paths import DEFAULT_ROOT, ConfigfsPaths, Kind, ObjKey, object_path
from .plan import Action, Op, Plan, plan_apply, plan_teardown


@dataclass
class ApplyReport:
    done: list[str] = field(default_factory=list)  # operations executed, in order
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.done)


def _executor(executor: Executor | None, paths: ConfigfsPaths, fs: KernelFs,
              db_root: Path | None) -> Executor:
    return executor if executor is not None else LioExecutor(paths, fs, db_root)


def preview(state: TargetState, ledger: Ledger, *, root: Path = DEFAULT_ROOT,
            executor: Executor | None = None) -> Plan:
    """What apply() would do now (for logging, dry runs and the admin shell)."""
    paths = ConfigfsPaths(Path(root))
    ex = _executor(executor, paths, KernelFs(), state.db_root)
    return plan_apply(state, ledger.snapshot(), ex.exists)


def apply(state: TargetState, ledger: Ledger, *, root: Path = DEFAULT_ROOT,
          executor: Executor | None = None, fs: KernelFs | None = None,
          allow_foreign_db_root: bool = False,
          on_backstores_ready: Callable[[list[str]], None] | None = None) -> ApplyReport:
    """Make the kernel match ``state`` for everything we own; idempotent.

    ``on_backstores_ready(names)`` is called once, after every backstore exists and
    before the first LUN is made, with the names of backstores (re)created by this
    call. Start their handlers there: linking a tcm_loop LUN makes the kernel scan
    it at once (INQUIRY through the ring), and with nobody serving the ring that
    blocks for cmd_time_out (hours, for tape).

    Raises ConflictError (nothing changed) if an object we need exists but is not
    ours, DbRootError if db_root cannot be set, ExecutionError if a kernel write
    fails (the ledger then still lists every object made so far; apply again or
    teardown).
    """
    paths = ConfigfsPaths(Path(root))
    fs = fs or KernelFs()
    ex = _executor(executor, paths, fs, state.db_root)
    report = ApplyReport()

    # db_root before anything else: the kernel accepts it only while no device exists.
    result = ensure_db_root(fs, paths, state.db_root, allow_foreign_db_root)
    if result.warning:
        report.warnings.append(result.warning)
    if result.previous is not None and "db_root_previous" not in ledger.meta:
        ledger.set_meta("db_root_previous", result.previous)
    if ledger.meta.get("db_root") != str(state.db_root):
        ledger.set_meta("db_root", str(state.db_root))

    todo = plan_apply(state, ledger.snapshot(), ex.exists)
    if todo.conflicts:
        raise ConflictError([_where(k, paths) for k in todo.conflicts])
    fresh = [str(op.key.ident[0]) for op in todo.ops
             if op.action is Action.CREATE and op.key.kind is Kind.BACKSTORE]
    pending_hook = on_backstores_ready
    for op in todo.ops:
        if pending_hook is not None and op.action is not Action.DELETE \
                and op.key.kind.rank > Kind.BACKSTORE.rank:
            pending_hook(fresh)
            pending_hook = None
        try:
            _run(op, ledger, ex)
        except ConfigfsError:
            raise
        except OSError as exc:
            raise ExecutionError(f"{op}: {exc}") from exc
        report.done.append(str(op))
    if pending_hook is not None:
        pending_hook(fresh)
    return report


def _run(op: Op, ledger: Ledger, ex: Executor) -> None:
    key = op.key
    if op.action is Action.DELETE:
        rec = ledger.get(key)
        if rec is not None:
            ex.delete(rec)
            ledger.remove(key)
        return
    if op.action is Action.ENABLE:
        ex.enable(key)
        rec = ledger.get(key)
        if rec is not None:
            ledger.put(replace(rec, data={**rec.data, "enabled": True}))
        return
    node = op.node
    assert node is not None
    if op.action is Action.UPDATE:
        rec = ledger.get(key)
        assert rec is not None
        ex.update(node, rec, ledger)
        ledger.put(replace(rec, live_digest=node.live_digest))
        return
    old = ledger.get(key)
    if old is not None:
        # A record whose object is missing may still have left-overs (an empty hba
        # directory after a crash between two mkdirs): clear them before re-creating.
        ex.delete(old)
    data = ex.allocate(node)
    if key.kind is Kind.ISCSI_TPG:
        data["enabled"] = False  # flipped by the ENABLE op at the end of the plan
    rec = Record(key, PENDING, node.create_digest, node.live_digest, data)
    ledger.put(rec)  # before the mkdir: a crash from here on leaves a trace
    ex.create(node, rec, ledger)
    ledger.mark_done(key)


def teardown(ledger: Ledger, *, root: Path = DEFAULT_ROOT, executor: Executor | None = None,
             fs: KernelFs | None = None, backstores: bool = True) -> list[str]:
    """Remove exactly what the ledger lists, children first; already-gone is fine.

    ``backstores=False`` keeps the user backstores (shutdown: unexport, stop the
    handlers, then call again with the default). Objects that cannot be removed stay
    in the ledger and are reported in one TeardownError after trying all the others.
    Returns warnings (a db_root that could not be given back).
    """
    paths = ConfigfsPaths(Path(root))
    fs = fs or KernelFs()
    db_root = ledger.meta.get("db_root")
    ex = _executor(executor, paths, fs, Path(db_root) if db_root else None)
    failures: list[str] = []
    for op in plan_teardown(ledger.snapshot(), backstores=backstores).ops:
        rec = ledger.get(op.key)
        if rec is None:
            continue
        try:
            ex.delete(rec)
        except (ConfigfsError, OSError) as exc:
            failures.append(f"{op.key}: {exc}")
            continue
        ledger.remove(op.key)
    if failures:
        raise TeardownError(failures)
    warnings: list[str] = []
    if backstores:
        previous = ledger.meta.get("db_root_previous")
        if previous and db_root:
            warning = restore_db_root(fs, paths, previous, Path(db_root))
            if warning:
                warnings.append(warning)
        ledger.clear()
    return warnings


def _where(key: ObjKey, paths: ConfigfsPaths) -> str:
    if key.kind is Kind.DISCOVERY_AUTH:
        return f"{paths.discovery_auth} (iSCSI discovery auth is already configured)"
    if key.kind is Kind.NVMET_PORT:
        return (f"{paths.nvmet / 'ports'}/* (an nvmet port already listens on "
                f"{key.ident[0]}:{key.ident[1]})")
    path = object_path(key, paths)
    return f"{path}" if path is not None else str(key)

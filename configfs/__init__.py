"""Kernel target orchestration: desired state in, idempotent apply and exact teardown.

Daemon use (configfs depends on nothing in thur; the daemon wires it to handlers):

    problems = check_prerequisites()           # actionable sentences; [] when fine
    load_modules()                             # mount configfs, modprobe LIO/TCMU/uio
    ledger = Ledger.load(data_dir / "configfs-ledger.json")
    apply(state, ledger, on_backstores_ready=start_handlers)   # idempotent, every start
    # after kill -9 / upgrade restart, per device: find_user_backstore -> find_uio ->
    # prepare_reattach (block_dev=1, reset_ring=2) -> handler reopens -> finish_reattach
    teardown(ledger, backstores=False)         # SIGTERM: unexport while handlers serve,
    stop_handlers(); teardown(ledger)          # then remove the devices themselves

Module map: model (desired state), plan (pure diff), ledger (what we created),
lio (executor: rtslib-fb for fabric objects), nvmet (nvmet objects, plain configfs
writes; nvmet_model is their desired state), direct (configfs writes rtslib cannot do
safely), orchestrate (apply/teardown), reattach (uio/ring actions), prereq (host checks).
"""

from .control import parse_aptpl, render_control_options, render_control_string
from .errors import (
    BackstoreNotFound,
    ConfigfsError,
    ConflictError,
    DbRootError,
    ExecutionError,
    LedgerError,
    PrerequisiteError,
    StateError,
    TeardownError,
)
from .ledger import Ledger
from .model import (
    Chap,
    IscsiTarget,
    LoopbackTarget,
    Lun,
    MappedLun,
    NodeAcl,
    Portal,
    TargetState,
    UserBackstore,
)
from .nvmet import NvmetOps
from .nvmet_model import (
    LoopRef,
    NvmeHost,
    NvmeNamespace,
    NvmePort,
    NvmeSubsystem,
    check_dhchap_secret,
    check_nqn,
    make_dhchap_secret,
)
from .orchestrate import ApplyReport, apply, preview, teardown
from .paths import DEFAULT_ROOT
from .plan import Plan
from .prereq import (
    HostProbe,
    check_prerequisites,
    load_modules,
    load_nvme_modules,
    nvme_psk_hosts,
    nvme_tls_problems,
)
from .reattach import (
    BackstoreRef,
    block_dev,
    find_uio,
    find_user_backstore,
    finish_reattach,
    prepare_reattach,
    reset_ring,
)
from .sessions import IscsiSession, iscsi_sessions, nvmet_controllers, parse_acl_info

__all__ = [
    "IscsiSession",
    "iscsi_sessions",
    "nvmet_controllers",
    "parse_acl_info",
    "DEFAULT_ROOT",
    "ApplyReport",
    "BackstoreNotFound",
    "BackstoreRef",
    "Chap",
    "ConfigfsError",
    "ConflictError",
    "DbRootError",
    "ExecutionError",
    "HostProbe",
    "IscsiTarget",
    "Ledger",
    "LedgerError",
    "LoopRef",
    "LoopbackTarget",
    "Lun",
    "MappedLun",
    "NodeAcl",
    "NvmeHost",
    "NvmeNamespace",
    "NvmePort",
    "NvmeSubsystem",
    "NvmetOps",
    "Plan",
    "Portal",
    "PrerequisiteError",
    "StateError",
    "TargetState",
    "TeardownError",
    "UserBackstore",
    "apply",
    "block_dev",
    "check_dhchap_secret",
    "check_nqn",
    "check_prerequisites",
    "find_uio",
    "find_user_backstore",
    "finish_reattach",
    "load_modules",
    "load_nvme_modules",
    "make_dhchap_secret",
    "nvme_psk_hosts",
    "nvme_tls_problems",
    "parse_aptpl",
    "prepare_reattach",
    "preview",
    "render_control_options",
    "render_control_string",
    "reset_ring",
    "teardown",
]

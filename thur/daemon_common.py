"""The kernel and admin steps thurvtld and thurvsad share once they run.

Attaching a TCMU device to a backstore (fresh, or reattaching one that
outlived the last daemon: what was in flight fails back to the initiator,
never replayed), applying a configfs state with its warnings logged, and the
admin socket with its audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import configfs
from handlers.tcmu import TcmuDevice
from thur.admin import AdminServer, Handler
from thur.audit import AuditLog
from thur.observe import Observability

log = logging.getLogger(__name__)


def find_backstore(name: str, ledger: configfs.Ledger) -> configfs.BackstoreRef | None:
    """Our user backstore `name`, or None when the kernel has none by that name."""
    try:
        return configfs.find_user_backstore(name, ledger=ledger)
    except configfs.BackstoreNotFound:
        return None


def attach_device(obs: Observability, ledger: configfs.Ledger, backstore: str, engine: Any,
                  *, reattach: bool) -> tuple[TcmuDevice, configfs.BackstoreRef]:
    """Open, start and (when reattaching) unblock the TCMU device of `backstore`."""
    ref = find_backstore(backstore, ledger)
    if ref is None:
        raise configfs.BackstoreNotFound(backstore)
    if reattach:
        # Mode 2: fail what was in flight back to the initiator, so a command is
        # retried by the host (a tape WRITE too) rather than replayed twice.
        configfs.prepare_reattach(ref, mode=2)
    device = obs.open_device(ref.hba, ref.name, engine)
    device.start()
    if reattach:
        try:
            configfs.finish_reattach(ref)
        except BaseException:
            device.stop(drain=False)
            device.close()
            raise
    return device, ref


def apply_state(state: configfs.TargetState, ledger: configfs.Ledger,
                attach: Callable[[list[str]], None]) -> None:
    """configfs.apply with the hook that attaches the devices (it runs once every
    backstore exists and before any LUN is exported, so no initiator ever waits on a
    ring nobody serves)."""
    report = configfs.apply(state, ledger, on_backstores_ready=attach)
    for warning in report.warnings:
        log.warning("configfs: %s", warning)
    log.info("configfs: %d changes applied", len(report.done))


def admin_server(socket: Path, verbs: dict[str, Handler], *, group: str | None,
                 default_group: str, data_dir: Path) -> AdminServer:
    """The admin socket; every state change through it is recorded (thur/audit.py)."""
    server = AdminServer(socket, verbs, group=group or default_group,
                         audit=AuditLog(data_dir / "audit"))
    server.start()
    return server

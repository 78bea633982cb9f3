"""thurvtld: serves the tape library through LIO + TCMU.

Start: check and load the kernel modules, mint or load the library identity,
load the inventory (refusing, with exit status 2, a config that would orphan a
cartridge), put cartridges back into the drives that held them, apply the
desired configfs state (idempotent), attach one TCMU device per logical unit,
serve the admin socket (verbs in thur/vtl/verbs.py).

Stop (SIGTERM/SIGINT): unexport the target so no new commands arrive, finish
the commands in flight, detach, and remove exactly the kernel objects this
daemon created.

Detach for upgrade (SIGUSR1): finish the command in flight and exit, leaving
every kernel object (and so every initiator session) in place. The next start
finds its backstores, blocks each, resets its ring (commands caught in the gap
fail back with CHECK CONDITION, to be retried by the initiator, never silently
replayed), reattaches and unblocks. A kill -9 takes the same path on restart.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import configfs
from handlers.tcmu import TcmuDevice
from thur import daemon_main, systemd
from thur.admin import AdminServer
from thur.config import VtlConfig, load_vtl_config
from thur.daemon_common import admin_server, apply_state, attach_device, find_backstore
from thur.daemon_main import DaemonProduct, ledger_path, teardown_ledger
from thur.library import (
    InventoryCorrupt,
    LibraryChanger,
    LibraryIdentity,
    ShrinkRefused,
    load_or_mint,
    open_library,
)
from thur.observe import Observability
from thur.system_verbs import system_verbs
from thur.vtl.storage import VtlStorage
from thur.vtl.topology import (
    LogicalUnit,
    build_drives,
    build_target_state,
    build_units,
)
from thur.vtl.verbs import library_verbs

log = logging.getLogger("thurvtld")
DEFAULT_CONFIG = Path("/etc/thurvtl/thurvtl.yaml")


class Daemon:
    """The object graph of one running thurvtld."""

    def __init__(self, config: VtlConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.identity: LibraryIdentity = load_or_mint(config.data_dir, config.library)
        drives = build_drives(config, self.identity)
        self.storage = VtlStorage(config.data_dir, backend=config.backend, pool=config.pool)
        self.storage.start()
        try:
            # Raises ShrinkRefused before any kernel object is touched.
            self.library: LibraryChanger = open_library(
                config.data_dir, config.library, self.identity, self.storage.source, drives
            )
        except BaseException:
            self.storage.shutdown()
            raise
        self.units: list[LogicalUnit] = build_units(config, self.identity, self.library, drives)
        # Cartridges that were in drives when the last run ended go back in (each drive
        # then reports 06/28/00 after its 06/29/00), before any initiator can ask.
        for warning in self.library.restore_drives():
            log.warning("%s", warning)
        self.state = build_target_state(config, self.units)
        self.ledger = configfs.Ledger.load(ledger_path(config.data_dir))
        self.devices: list[TcmuDevice] = []
        self.admin: AdminServer | None = None
        self.obs = Observability(
            "thurvtl", config.http, tier=self.storage.tier, target_iqn=config.iscsi.target_iqn,
            info=self._info, otlp=config.otlp,
            gauges={"cartridges": ("Cartridges in the library",
                                   lambda: len(self.storage.source.list()))},
        )
        self._stop = threading.Event()
        self._detach_only = False
        self.reattaching = False

    # --- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self.obs.start()  # first: a taken http.listen fails the start before any kernel work
        existing = {u.name for u in self.units if self._find(u.name) is not None}
        # A failed restart must not drop sessions that outlived the last daemon.
        self.reattaching = bool(existing)
        if existing:
            log.info("found %d backstores from a previous run: reattaching", len(existing))

        def attach(recreated: list[str]) -> None:
            for unit in self.units:
                self._attach(unit, reattach=unit.name in existing and unit.name not in recreated)

        apply_state(self.state, self.ledger, attach)
        self.admin = admin_server(self.config.admin_socket, self._verbs(),
                                  group=self.config.admin_group, default_group="thurvtl",
                                  data_dir=self.config.data_dir)

    def _attach(self, unit: LogicalUnit, reattach: bool) -> None:
        device, ref = attach_device(self.obs, self.ledger, unit.name, unit.engine,
                                    reattach=reattach)
        self.devices.append(device)
        verb = "reattached" if reattach else "serving"
        log.info("LUN %d %s: %s (user_%d)", unit.lun, unit.name, verb, ref.hba)

    def _find(self, name: str) -> configfs.BackstoreRef | None:
        return find_backstore(name, self.ledger)

    def serve(self) -> None:
        portals = ", ".join(str(p) for p in self.config.iscsi.listen)
        # STATUS= is what `systemctl status` shows next to the unit's state.
        systemd.notify(f"READY=1\nSTATUS=serving {self.config.iscsi.target_iqn} on {portals}")
        log.info(
            "serving %s on %s: 1 changer, %d drives",
            self.config.iscsi.target_iqn,
            ", ".join(str(p) for p in self.config.iscsi.listen),
            len(self.units) - 1,
        )
        while not self._stop.wait(1.0):
            for device in self.devices:
                if device.error is not None:
                    log.error("%s stopped serving: %s", device, device.error)
        self.shutdown()

    def request_stop(self, detach_only: bool) -> None:
        self._detach_only = detach_only
        self._stop.set()

    def shutdown(self) -> None:
        how = "detaching, kernel objects stay" if self._detach_only else "removing kernel objects"
        systemd.notify(f"STOPPING=1\nSTATUS=stopping: {how}")
        self.obs.close()
        if self.admin is not None:
            self.admin.close()
        if self._detach_only:
            for device in self.devices:
                device.close()
            self.storage.shutdown()
            log.info("detached; kernel objects left in place for the next start")
            return
        # Unexport first so initiators see the LUs go away instead of hanging
        # on a ring nobody serves; then drain and remove the backstores.
        configfs.teardown(self.ledger, backstores=False)
        for device in self.devices:
            device.stop(drain=True)
            device.close()
        # Cartridges still in drives are flushed and their metadata published.
        self.storage.shutdown()
        configfs.teardown(self.ledger)
        log.info("stopped; kernel objects removed")

    # --- admin verbs -------------------------------------------------------

    def _verbs(self) -> dict[str, Any]:
        # The logical bytes of `system stats`: every cartridge's record bytes.
        def logical() -> int:
            return sum(f.used_bytes or 0 for f in self.library.all_facts())

        return library_verbs(self.library, self._info) | system_verbs(
            self.storage.tier, self.storage.cartridges.owners, logical, iscsi=self.config.iscsi)

    def _info(self) -> dict[str, Any]:
        lib = self.config.library
        return {
            "target_iqn": self.config.iscsi.target_iqn,
            "chassis_serial": self.identity.chassis_serial,
            "num_slots": lib.num_slots,
            "num_mail_slots": lib.num_mail_slots,
            "num_drives": lib.num_drives,
            "drives": [
                {"index": u.lun - 1, "lun": u.lun, "serial": u.engine.identity.serial}
                for u in self.units[1:]
            ],
        }


PRODUCT = DaemonProduct(
    prog="thurvtld",
    description="Thur VTL daemon",
    default_config=DEFAULT_CONFIG,
    load_config=load_vtl_config,
    make_daemon=Daemon,
    teardown=lambda config: teardown_ledger(ledger_path(config.data_dir)),
    config_refusals=(ShrinkRefused, InventoryCorrupt),
)


def main(argv: list[str] | None = None) -> int:
    return daemon_main.main(PRODUCT, argv)


if __name__ == "__main__":
    sys.exit(main())

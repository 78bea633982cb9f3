"""thurvsad: serves thin volumes through LIO + TCMU over iSCSI and/or NVMe/TCP.

Mirrors thurvtld (thur/vtl/daemon.py) step for step.

Start: check and load the kernel modules, start the storage (pool and a local
backend under data_dir, backend check, volumes only the bucket has restored,
background replication), open every volume, apply the desired configfs state
(idempotent: one user backstore per volume, exported as LUN `volume.lun` of
one iSCSI target; for NVMe/TCP also a tcm_loop LUN whose local disk is a namespace
of one nvmet subsystem: thur/vsa/topology.py), attach one TCMU device per volume in the
`on_backstores_ready` hook (before any LUN exists), serve the admin socket
(verbs in thur/vsa/verbs.py).

At run time `volume create` exports the new volume at once (the desired state
is applied again; the hook attaches the new device), `volume delete` removes
its LUN (and namespace), stops its handler and removes its backstore, `volume
resize` raises CAPACITY DATA HAS CHANGED on the LU (the backstore's dev_size is
left as it was: see thur/vsa/topology.py `Export`) and, for NVMe, rescans the
loopback disk and revalidates the namespace (hosts get a namespace-changed AEN).

Stop (SIGTERM/SIGINT): unexport the target so no new commands arrive, finish
the commands in flight, flush and publish every volume, remove exactly the
kernel objects this daemon created.

Detach for upgrade (SIGUSR1): finish the commands in flight, flush, and exit,
leaving every kernel object (and so every initiator session) in place. The next
start blocks each backstore, resets its ring (commands caught in the gap fail
back with CHECK CONDITION, retried by the initiator), reattaches and unblocks.
A kill -9 takes the same path on restart; what SYNCHRONIZE CACHE acknowledged
survives it (docs/VOLUMES.md).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import configfs
from configfs.direct import KernelFs
from configfs.paths import ConfigfsPaths
from handlers.scsi import ThinDisk
from handlers.tcmu import TcmuDevice
from thur import daemon_main, systemd
from thur.admin import AdminServer
from thur.daemon_common import admin_server, apply_state, attach_device, find_backstore
from thur.daemon_main import DaemonProduct, ledger_path, teardown_ledger
from thur.fsutil import fsync_dir
from thur.observe import Observability
from thur.system_verbs import system_verbs
from thur.volume import Volume
from thur.vsa.config import VsaConfig, load_vsa_config
from thur.vsa.storage import VsaStorage
from thur.vsa.topology import Export, backstore_name, build_target_state, loop_wwn, nsid
from thur.vsa.verbs import vsa_verbs

log = logging.getLogger("thurvsad")
DEFAULT_CONFIG = Path("/etc/thurvsa/thurvsa.yaml")
ISCSI_ROOT = configfs.DEFAULT_ROOT / "target" / "iscsi"
PROC_NET = Path("/proc/net")


class Daemon:
    """The object graph of one running thurvsad."""

    def __init__(self, config: VsaConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = VsaStorage(config.data_dir, backend=config.backend, pool=config.pool)
        self.storage.start()
        self.store = self.storage.volumes
        self.lock = threading.RLock()  # the exports, the devices and every apply
        self.kernel_sizes = KernelSizes(config.data_dir / "exports.json")
        self.exports: dict[str, Export] = {}
        try:
            for name in self.store.list():
                self._add_export(name)
        except BaseException:
            self.storage.shutdown()
            raise
        self.ledger = configfs.Ledger.load(ledger_path(config.data_dir))
        self.devices: dict[str, TcmuDevice] = {}
        self.admin: AdminServer | None = None
        self.obs = Observability(
            "thurvsa", config.http, tier=self.storage.tier, target_iqn=config.iscsi.target_iqn,
            info=self._info, otlp=config.otlp,
            gauges={"volumes": ("Volumes exported", lambda: len(self.exports))},
        )
        self._stop = threading.Event()
        self._detach_only = False
        self.reattaching = False

    # --- exports -----------------------------------------------------------

    def _add_export(self, name: str) -> Export | None:
        vol = self.store.open(name)
        if vol.lun is None:
            log.warning("volume %s has no LUN: not exported", name)
            return None
        export = Export(
            name=name,
            lun=vol.lun,
            backstore=backstore_name(self.config.instance, name, vol.lun),
            serial=vol.serial,
            block_size=vol.block_size,
            kernel_size=self.kernel_sizes.get(name, vol.num_blocks * vol.block_size),
            engine=ThinDisk(vol, resolver=self._resolve),
        )
        self.exports[name] = export
        return export

    def _resolve(self, designator: bytes) -> Volume | None:
        """EXTENDED COPY: another LU of this daemon, by its VPD 83h NAA."""
        for export in list(self.exports.values()):
            if export.engine.identity.naa() == designator:
                return export.engine.volume
        return None

    def _state(self, unexported: tuple[str, ...] = ()) -> configfs.TargetState:
        return build_target_state(
            self.config, self.exports.values(), unexported=unexported
        )

    def _apply(self, state: configfs.TargetState, existing: set[str]) -> None:
        """Apply `state`; the hook attaches every export without a device (a backstore
        that outlived the last daemon and was not recreated is reattached)."""

        def attach(recreated: list[str]) -> None:
            for export in sorted(self.exports.values(), key=lambda e: e.lun):
                if export.name not in self.devices:
                    reattach = export.backstore in existing and export.backstore not in recreated
                    self._attach(export, reattach=reattach)

        apply_state(state, self.ledger, attach)
        for export in self.exports.values():
            self.kernel_sizes.set(export.name, export.kernel_size)

    # --- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self.obs.start()  # first: a taken http.listen fails the start before any kernel work
        with self.lock:
            existing = {e.backstore for e in self.exports.values()
                        if self._find(e.backstore) is not None}
            # A failed restart must not drop sessions that outlived the last daemon.
            self.reattaching = bool(existing)
            if existing:
                log.info("found %d backstores from a previous run: reattaching", len(existing))
            self._apply(self._state(), existing)
        self.admin = admin_server(self.config.admin_socket, self._verbs(),
                                  group=self.config.admin_group, default_group="thurvsa",
                                  data_dir=self.config.data_dir)

    def _attach(self, export: Export, reattach: bool) -> None:
        device, ref = attach_device(self.obs, self.ledger, export.backstore, export.engine,
                                    reattach=reattach)
        self.devices[export.name] = device
        verb = "reattached" if reattach else "serving"
        log.info("LUN %d %s: %s (user_%d/%s)", export.lun, export.name, verb, ref.hba, ref.name)

    def _find(self, name: str) -> configfs.BackstoreRef | None:
        return find_backstore(name, self.ledger)

    def serve(self) -> None:
        served = []
        if self.config.iscsi_enabled:
            served.append(f"iSCSI {self.config.iscsi.target_iqn} on "
                          + ", ".join(str(p) for p in self.config.iscsi.listen))
        if self.config.nvme_enabled:
            served.append(f"NVMe/TCP {self.config.nvme.subsystem_nqn} on "
                          + ", ".join(str(p) for p in self.config.nvme.listen))
        status = f"serving {'; '.join(served)}: {len(self.exports)} volumes"
        # STATUS= is what `systemctl status` shows next to the unit's state.
        systemd.notify(f"READY=1\nSTATUS={status}")
        log.info("%s", status)
        while not self._stop.wait(1.0):
            with self.lock:
                devices = list(self.devices.items())
            for name, device in devices:
                if device.error is not None:
                    log.error("volume %s: %s stopped serving: %s", name, device, device.error)
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
        with self.lock:
            if self._detach_only:
                for device in self.devices.values():
                    device.close()
                self.storage.shutdown()
                log.info("detached; kernel objects left in place for the next start")
                return
            # Unexport first so initiators see the LUs go away instead of hanging on a
            # ring nobody serves; then drain, flush the volumes, remove the backstores.
            configfs.teardown(self.ledger, backstores=False)
            for device in self.devices.values():
                device.stop(drain=True)
                device.close()
            self.storage.shutdown()
            configfs.teardown(self.ledger)
            self.kernel_sizes.clear()
            log.info("stopped; kernel objects removed")

    # --- the verbs' exporter -------------------------------------------------

    def export(self, name: str) -> None:
        with self.lock:
            if name in self.exports:
                return
            export = self._add_export(name)
            if export is None:
                return
            try:
                self._apply(self._state(), existing=set())
            except BaseException:
                # Take the half-made export back out, so the next apply is clean.
                self.exports.pop(name, None)
                device = self.devices.pop(name, None)
                if device is not None:
                    device.stop()
                    device.close()
                self.store.close(name)
                raise

    def unexport(self, name: str) -> None:
        with self.lock:
            if name not in self.exports:
                return
            # 1. the LUN goes (the handler still serves, so nothing hangs meanwhile);
            self._apply(self._state(unexported=(name,)), existing=set())
            # 2. the handler finishes what was queued and lets go of the ring;
            device = self.devices.pop(name, None)
            if device is not None:
                device.stop(drain=True)
                device.close()
            # 3. the backstore goes.
            del self.exports[name]
            self._apply(self._state(), existing=set())
            self.kernel_sizes.drop(name)
            log.info("volume %s unexported", name)

    def exported(self, name: str) -> bool:
        with self.lock:
            return name in self.devices

    def sessions(self) -> int | None:
        """iSCSI sessions plus NVMe/TCP connections that can reach our volumes."""
        counts = []
        if self.config.iscsi_enabled:
            counts.append(count_sessions(self.config.iscsi.target_iqn))
        if self.config.nvme_enabled:
            counts.append(count_tcp_connections({p.port for p in self.config.nvme.listen}))
        if any(c is None for c in counts):
            return None
        return sum(c for c in counts if c is not None)

    def resized(self, name: str) -> None:
        with self.lock:
            export = self.exports.get(name)
        if export is None:
            return
        export.engine.capacity_changed()
        vol = export.engine.volume
        log.info("volume %s resized to %d bytes: initiators get CAPACITY DATA HAS "
                 "CHANGED", name, vol.num_blocks * vol.block_size)
        if self.config.nvme_enabled and name in self.devices:
            # nvmet reads the size from the loopback disk: make it re-read its capacity
            # first, then revalidate (which tells connected hosts with an AEN).
            ops = configfs.NvmetOps(ConfigfsPaths(configfs.DEFAULT_ROOT), KernelFs())
            try:
                ops.rescan_loop_lun(loop_wwn(self.config.instance), export.lun)
                ops.revalidate(self.config.nvme.subsystem_nqn, nsid(export.lun))
            except (OSError, configfs.ConfigfsError) as exc:
                log.warning("volume %s: NVMe hosts may not see the new size until a "
                            "namespace rescan: %s", name, exc)

    # --- admin verbs -------------------------------------------------------

    def _verbs(self) -> dict[str, Any]:
        # The logical bytes of `system stats`: every volume's mapped bytes.
        def logical() -> int:
            return sum(self.store.info(name)["mapped_bytes"] for name in self.store.list())

        return vsa_verbs(self.store, self, self._info) | system_verbs(
            self.storage.tier, self.store.owners, logical, iscsi=self.config.iscsi)

    def _info(self) -> dict[str, Any]:
        with self.lock:
            exports = sorted(self.exports.values(), key=lambda e: e.lun)
            nvme = self.config.nvme
            return {
                "transports": list(self.config.transports),
                "target_iqn": self.config.iscsi.target_iqn if self.config.iscsi_enabled
                else None,
                "portals": [str(p) for p in self.config.iscsi.listen]
                if self.config.iscsi_enabled else [],
                "subsystem_nqn": nvme.subsystem_nqn if self.config.nvme_enabled else None,
                "nvme_listen": [str(p) for p in nvme.listen]
                if self.config.nvme_enabled else [],
                "instance": self.config.instance,
                "sessions": self.sessions(),
                "volumes": [
                    {"name": e.name, "lun": e.lun, "backstore": e.backstore,
                     "nsid": nsid(e.lun) if self.config.nvme_enabled else None,
                     "serving": e.name in self.devices}
                    for e in exports
                ],
            }


class KernelSizes:
    """The dev_size each backstore was created with, kept across restarts so a resized
    volume's backstore is not rebuilt (a changed creation setting) under its sessions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._sizes: dict[str, int] = json.loads(path.read_text())
        except (OSError, ValueError):
            self._sizes = {}

    def get(self, name: str, default: int) -> int:
        return int(self._sizes.get(name, default))

    def set(self, name: str, size: int) -> None:
        if self._sizes.get(name) != size:
            self._sizes[name] = size
            self._save()

    def drop(self, name: str) -> None:
        if self._sizes.pop(name, None) is not None:
            self._save()

    def clear(self) -> None:
        self._sizes = {}
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(self._sizes, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)


def count_sessions(iqn: str, root: Path = ISCSI_ROOT) -> int | None:
    """iSCSI sessions logged in to the target, from configfs; None when unreadable.

    Demo mode lists them in the TPG's `dynamic_sessions`; an ACL's `info` starts with
    "No active iSCSI Session" when its initiator is not logged in.
    """
    count = 0
    try:
        for tpg in (root / iqn).glob("tpgt_*"):
            dynamic = tpg / "dynamic_sessions"
            if dynamic.exists():
                count += len({line.strip() for line in dynamic.read_text().splitlines()
                              if line.strip()})
            acls = tpg / "acls"
            if acls.exists():
                for acl in acls.iterdir():
                    info = (acl / "info").read_text()
                    if info.strip() and not info.startswith("No active"):
                        count += 1
    except OSError:
        return None
    return count


def count_tcp_connections(ports: set[int], proc_net: Path = PROC_NET) -> int | None:
    """Established TCP connections whose local end is one of ``ports`` (NVMe/TCP: an
    admin queue plus one per I/O queue for each connected host); None when unreadable."""
    count = 0
    try:
        for name in ("tcp", "tcp6"):
            path = proc_net / name
            if not path.exists():
                continue
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                # sl local_address rem_address st ...; st 01 is ESTABLISHED
                if len(fields) > 3 and fields[3] == "01" \
                        and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                    count += 1
    except (OSError, ValueError, IndexError):
        return None
    return count


def warn_missing_psks(config: VsaConfig) -> None:
    """PSKs are provisioned outside thurvsad (nvme-cli, into the .nvme keyring) and may
    come later, so a missing one is a warning: that host cannot connect until it has one."""
    nqn = config.nvme.subsystem_nqn
    have = configfs.nvme_psk_hosts(nqn)
    wanted = [h.nqn for h in config.nvme.hosts]
    missing = [h for h in wanted if h not in have] if wanted else ([] if have else ["any"])
    for host in missing:
        who = "no host" if host == "any" else f"host {host}"
        log.warning("nvme.tls: %s has a TLS PSK for %s in the .nvme keyring; add one with "
                    "`nvme gen-tls-key --hostnqn=<host> --subsysnqn=%s --insert` (or "
                    "check-tls-key --insert with the host's key)", who, nqn, nqn)


def teardown_leftovers(config: VsaConfig) -> int:
    """`thurvsad --teardown`: remove what a crashed daemon left in the kernel."""
    status = teardown_ledger(ledger_path(config.data_dir))
    KernelSizes(config.data_dir / "exports.json").clear()
    return status


def nvme_kernel(config: VsaConfig, teardown: bool) -> list[str]:
    """The NVMe target modules when NVMe/TCP is on; with `nvme.tls`, the reasons the
    kernel or tlshd cannot do TLS (refused rather than serve in clear a port the
    config says must be encrypted)."""
    if not config.nvme_enabled:
        return []
    configfs.load_nvme_modules(tls=config.nvme.tls)
    if not config.nvme.tls or teardown:
        return []
    problems = [f"nvme.tls: {p}" for p in configfs.nvme_tls_problems()]
    if not problems:
        warn_missing_psks(config)
    return problems


PRODUCT = DaemonProduct(
    prog="thurvsad",
    description="Thur VSA daemon",
    default_config=DEFAULT_CONFIG,
    load_config=load_vsa_config,
    make_daemon=Daemon,
    teardown=teardown_leftovers,
    kernel_extras=nvme_kernel,
)


def main(argv: list[str] | None = None) -> int:
    return daemon_main.main(PRODUCT, argv)


if __name__ == "__main__":
    sys.exit(main())

"""nvmet objects, written straight into configfs (rtslib-fb has no nvmet support).

Layout (/sys/kernel/config/nvmet):
    hosts/<hostnqn>/{dhchap_key,dhchap_ctrl_key,dhchap_hash,dhchap_dhgroup}
    subsystems/<nqn>/{attr_allow_any_host,attr_serial,attr_model}
    subsystems/<nqn>/namespaces/<nsid>/{device_path,device_uuid,device_nguid,enable}
    subsystems/<nqn>/allowed_hosts/<hostnqn> -> hosts/<hostnqn>
    ports/<id>/{addr_trtype,addr_adrfam,addr_traddr,addr_trsvcid,addr_tsas}
    ports/<id>/subsystems/<nqn> -> subsystems/<nqn>     (this link opens the listener)

Rules the kernel enforces that shape the order here: a port's addr_* only change
while no subsystem is linked to it; addr_tsas needs addr_trtype first; hosts can be
linked into allowed_hosts only while attr_allow_any_host is 0; a namespace takes its
device_path, uuid and nguid before enable. Everything goes through ``KernelFs`` and
an injectable /sys and path resolver, so it all runs against a temp directory.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .direct import KernelFs
from .errors import ExecutionError
from .ledger import Ledger, Record
from .paths import TPG_TAG, ConfigfsPaths, Kind, ObjKey, object_path
from .plan import Node

DEVICE_TIMEOUT = 120.0  # udev names a new disk within seconds; TCG is ~10x slower


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


class NvmetOps:
    """The nvmet half of the executor (LioExecutor hands nvmet_* kinds to it)."""

    def __init__(self, paths: ConfigfsPaths, fs: KernelFs, *, sys_root: Path = Path("/sys"),
                 resolve: Callable[[str], str] = os.path.realpath,
                 device_timeout: float = DEVICE_TIMEOUT,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = paths
        self.fs = fs
        self.sys_root = sys_root
        self.resolve = resolve
        self.device_timeout = device_timeout
        self.sleep = sleep
        self.clock = clock

    @property
    def ports_dir(self) -> Path:
        return self.paths.nvmet / "ports"

    # -- probing -----------------------------------------------------------------------
    def find_port(self, traddr: str, trsvcid: int) -> int | None:
        """The id of a TCP port configured on this address (by anyone), if any."""
        if not self.ports_dir.is_dir():
            return None
        for d in sorted(self.ports_dir.iterdir()):
            try:
                if (self.fs.read(d / "addr_trtype").strip() == "tcp"
                        and self.fs.read(d / "addr_traddr").strip() == traddr
                        and self.fs.read(d / "addr_trsvcid").strip() == str(trsvcid)):
                    return int(d.name)
            except (OSError, ValueError):
                continue
        return None

    def _port_id(self, key: ObjKey, record: Record | None) -> int | None:
        if record is not None and record.data.get("port_id") is not None:
            return int(record.data["port_id"])
        return self.find_port(str(key.ident[0]), int(key.ident[1]))

    def path(self, key: ObjKey, record: Record | None) -> Path | None:
        port_id = None
        if key.kind in (Kind.NVMET_PORT, Kind.NVMET_PORT_SUBSYSTEM):
            port_id = self._port_id(key, record)
        return object_path(key, self.paths, port_id=port_id)

    def exists(self, key: ObjKey, record: Record | None) -> bool:
        path = self.path(key, record)
        return path is not None and (path.is_symlink() or path.is_dir())

    def allocate(self, node: Node) -> dict[str, Any]:
        if node.key.kind is not Kind.NVMET_PORT:
            return {}
        used = set()
        if self.ports_dir.is_dir():
            used = {int(d.name) for d in self.ports_dir.iterdir() if d.name.isdigit()}
        port_id = 1
        while port_id in used:
            port_id += 1
        return {"port_id": port_id}

    # -- operations --------------------------------------------------------------------
    def create(self, node: Node, record: Record, ledger: Ledger) -> None:
        key, kind, spec = node.key, node.key.kind, node.create
        if kind is Kind.NVMET_PORT_SUBSYSTEM:
            port = ledger.get(ObjKey(Kind.NVMET_PORT, key.ident[:2]))
            if port is None or port.data.get("port_id") is None:
                raise ExecutionError(f"{key}: its port is not in the ledger")
            # Remember the id in this record too: teardown removes the link by it.
            record = replace(record, data={**record.data, "port_id": port.data["port_id"]})
            ledger.put(record)
        path = self.path(key, record)
        assert path is not None
        if kind is Kind.NVMET_NAMESPACE:
            device = self.wait_for_device(key, str(spec["device_path"]), spec.get("loop"))
            self._mkdir(path)
            self._write(path / "device_path", str(spec["device_path"]))
            self._write(path / "device_uuid", str(spec["device_uuid"]))
            self._write(path / "device_nguid", str(spec["device_nguid"]))
            try:
                self.fs.write(path / "enable", "1")
            except OSError as exc:
                raise ExecutionError(f"nvmet refused to enable namespace {key} on "
                                     f"{spec['device_path']} ({device}): {_why(exc)}; "
                                     "see dmesg") from exc
        elif kind is Kind.NVMET_HOST:
            self._mkdir(path)
            self._create_host(key, path, spec)
        elif kind is Kind.NVMET_SUBSYSTEM:
            self._mkdir(path)
            self._write(path / "attr_serial", str(spec["serial"]))
            self._write(path / "attr_model", str(spec["model"]))
            self.update(node, record, ledger)
        elif kind is Kind.NVMET_ALLOWED_HOST:
            self._symlink(self.paths.nvmet / "hosts" / str(key.ident[1]), path)
        elif kind is Kind.NVMET_PORT:
            self._mkdir(path)
            self._create_port(key, path, spec)
        elif kind is Kind.NVMET_PORT_SUBSYSTEM:
            try:
                self.fs.symlink(self.paths.nvmet / "subsystems" / str(key.ident[2]), path)
            except OSError as exc:
                # Linking the first subsystem enables the port: the listen happens here.
                raise ExecutionError(f"cannot expose {key.ident[2]} on NVMe/TCP port "
                                     f"{key.ident[0]}:{key.ident[1]}: {_why(exc)} (address "
                                     "in use or not local? see dmesg)") from exc
        else:
            raise AssertionError(kind)

    def _create_host(self, key: ObjKey, path: Path, spec: Any) -> None:
        if spec["dhchap_key"] and not (path / "dhchap_key").exists():
            raise ExecutionError(f"{key}: DH-HMAC-CHAP was asked for but this kernel has no "
                                 "nvmet authentication (CONFIG_NVME_TARGET_AUTH)")
        if not (path / "dhchap_key").exists():
            return  # no auth in this kernel, and none asked for
        self._write(path / "dhchap_hash", str(spec["dhchap_hash"]))
        self._write(path / "dhchap_dhgroup", str(spec["dhchap_dhgroup"]))
        for name in ("dhchap_key", "dhchap_ctrl_key"):
            if spec[name]:
                try:
                    self.fs.write(path / name, str(spec[name]))
                except OSError as exc:  # never echo the secret into an error
                    raise ExecutionError(f"the kernel refused {key} {name}: {_why(exc)}") \
                        from exc

    def _create_port(self, key: ObjKey, path: Path, spec: Any) -> None:
        self._write(path / "addr_trtype", str(spec["trtype"]))  # before addr_tsas
        self._write(path / "addr_adrfam", str(spec["adrfam"]))
        self._write(path / "addr_traddr", str(spec["traddr"]))
        self._write(path / "addr_trsvcid", str(spec["trsvcid"]))
        if spec["tsas"] != "none":
            try:
                self.fs.write(path / "addr_tsas", str(spec["tsas"]))
            except OSError as exc:
                raise ExecutionError(f"{key}: the kernel refused addr_tsas={spec['tsas']} "
                                     f"({_why(exc)}): it needs CONFIG_NVME_TARGET_TCP_TLS "
                                     "and the tls module") from exc

    def update(self, node: Node, record: Record, ledger: Ledger) -> None:
        if node.key.kind is Kind.NVMET_SUBSYSTEM:
            path = self.path(node.key, record)
            assert path is not None
            self._write(path / "attr_allow_any_host", str(node.live["allow_any_host"]))

    def delete(self, record: Record) -> None:
        key, kind = record.key, record.key.kind
        path = self.path(key, record)
        if path is None:
            return  # a port (or its link) whose id we never learnt: nothing was made
        if kind in (Kind.NVMET_PORT_SUBSYSTEM, Kind.NVMET_ALLOWED_HOST):
            if path.is_symlink():
                try:
                    self.fs.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise ExecutionError(f"cannot unlink {path}: {_why(exc)}") from exc
            return
        if not path.is_dir():
            return
        if kind is Kind.NVMET_NAMESPACE and (path / "enable").is_file():
            self._write(path / "enable", "0")  # releases the block device
        try:
            self.fs.rmdir(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            kids = foreign_children(kind, path)
            if exc.errno in (errno.ENOTEMPTY, errno.EBUSY) and kids:
                raise ExecutionError(f"left {path} in place: it holds objects we did not "
                                     f"create: {', '.join(kids)}") from exc
            raise ExecutionError(f"cannot remove {path}: {_why(exc)}") from exc

    # -- the exported disk -------------------------------------------------------------
    def loop_block_device(self, wwn: str, lun: int) -> str | None:
        """``/dev/sdX`` of a tcm_loop LUN, from its TPG's SCSI address; None until the
        kernel has made the disk."""
        tpg = self.paths.loopback / wwn / f"tpgt_{TPG_TAG}"
        try:
            address = self.fs.read(tpg / "address").strip()  # "host:0:target"
        except OSError:
            return None
        block = self.sys_root / "class" / "scsi_device" / f"{address}:{lun}" / "device" / "block"
        try:
            names = sorted(d.name for d in block.iterdir())
        except OSError:
            return None
        return f"/dev/{names[0]}" if names else None

    def wait_for_device(self, key: ObjKey, device_path: str,
                        loop: list[Any] | None) -> str:
        """Wait until ``device_path`` exists (udev makes the by-id link after the disk
        appears) and, for a loop LUN, is that LUN's disk: another disk with the same
        WWN (a local iSCSI login to our own target) may own the link instead."""
        deadline = self.clock() + self.device_timeout
        while True:
            target = self.resolve(device_path)
            if loop is None:
                if Path(target).exists():
                    return target
                expected = None
            else:
                expected = self.loop_block_device(str(loop[0]), int(loop[1]))
                if expected is not None and target == expected:
                    return target
            if self.clock() >= deadline:
                break
            self.sleep(0.2)
        if expected is not None and target != device_path:
            raise ExecutionError(f"{key}: {device_path} points to {target}, not to the "
                                 f"tcm_loop disk {expected} (another disk with the same "
                                 "WWN, e.g. an iSCSI login to this target on this host?)")
        raise ExecutionError(f"{key}: {device_path} did not appear within "
                             f"{self.device_timeout:.0f} s (is udev running?)")

    def rescan_loop_lun(self, wwn: str, lun: int) -> None:
        """Make the local disk re-read its capacity (after a resize)."""
        tpg = self.paths.loopback / wwn / f"tpgt_{TPG_TAG}"
        address = self.fs.read(tpg / "address").strip()
        self._write(self.sys_root / "class" / "scsi_device" / f"{address}:{lun}" / "device"
                    / "rescan", "1")

    def revalidate(self, nqn: str, nsid: int) -> None:
        """nvmet re-reads the namespace size and sends hosts a namespace-changed AEN."""
        self._write(self.paths.nvmet / "subsystems" / nqn / "namespaces" / str(nsid)
                    / "revalidate_size", "1")

    # -- helpers -----------------------------------------------------------------------
    def _mkdir(self, path: Path) -> None:
        try:
            self.fs.mkdir(path)
        except OSError as exc:
            raise ExecutionError(f"cannot create {path}: {_why(exc)}") from exc

    def _write(self, path: Path, value: str) -> None:
        try:
            self.fs.write(path, value)
        except OSError as exc:
            raise ExecutionError(f"cannot write {value!r} to {path}: {_why(exc)}") from exc

    def _symlink(self, target: Path, link: Path) -> None:
        try:
            self.fs.symlink(target, link)
        except OSError as exc:
            raise ExecutionError(f"cannot link {link} -> {target}: {_why(exc)}") from exc


def foreign_children(kind: Kind, path: Path) -> list[str]:
    """What keeps one of our nvmet containers from going: others' namespaces,
    allowed hosts or subsystem links."""
    groups = {Kind.NVMET_SUBSYSTEM: ("namespaces", "allowed_hosts"),
              Kind.NVMET_PORT: ("subsystems", "referrals")}.get(kind, ())
    kids: list[str] = []
    for group in groups:
        base = path / group
        if base.is_dir():
            kids += [f"{group}/{d.name}" for d in sorted(base.iterdir())]
    return kids

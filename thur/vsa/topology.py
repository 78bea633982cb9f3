"""What thurvsad exports: one user backstore per volume, one iSCSI target and/or
one NVMe subsystem.

A volume is LUN `volume.lun` (stable for its life, kept in its manifest). Its
backstore is `<instance>_<volume name>` (or `<instance>_lun<N>` when that
would pass configfs's 64-character limit), with the volume's serial as the
WWN unit serial, 4096-byte blocks and at most 8 MiB per command (the SBC
engine's VPD B0h promise, `DiskLimits.max_transfer_bytes`).

NVMe/TCP: nvmet exports block devices, so each volume's backstore is also LUN
`volume.lun` of one tcm_loop target (a local /dev/sdX) and that disk, by its
stable udev name `/dev/disk/by-id/wwn-0x<VPD 83h NAA>`, is namespace
`lun + 1` of one subsystem. Namespace UUID and NGUID, the subsystem serial and
the loopback WWNs are derived from stable names, so they survive restarts.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import configfs
from handlers.scsi import ThinDisk
from thur.config import Chap
from thur.vsa.config import VsaConfig

MAX_TRANSFER_BYTES = 8 << 20
MAX_BACKSTORE_NAME = 64


@dataclass
class Export:
    """One exported volume: its LU and the kernel object that carries it.

    `kernel_size` is the backstore's dev_size, fixed when it was first created:
    the kernel can only change it through a netlink reply we do not serve, and a
    changed dev_size would make apply() rebuild the backstore (dropping the LUN
    under a live session). TCMU passes every command to us, so READ CAPACITY
    always answers the volume's real size; dev_size is only what targetcli shows.
    """

    name: str
    lun: int
    backstore: str
    serial: str
    block_size: int
    kernel_size: int
    engine: ThinDisk


def _hex(tag: str, n: int) -> str:
    return hashlib.sha256(f"thur:{tag}".encode()).hexdigest()[:n]


def loop_wwn(instance: str) -> str:
    """The tcm_loop target carrying our volumes to nvmet (LIO's OUI, NAA 5)."""
    return "naa.5001405" + _hex(f"loop:{instance}", 9)


def loop_nexus(instance: str) -> str:
    """Fixed, so LIO keys the loopback initiator's reservations the same each start."""
    return "naa.5001405" + _hex(f"loop-nexus:{instance}", 9)


def nsid(lun: int) -> int:
    return lun + 1  # NSID 0 is invalid; LUN 0 is namespace 1


def by_id_path(export: Export) -> str:
    """udev's name for the loopback disk: its VPD 83h NAA designator (all 16 bytes)."""
    return f"/dev/disk/by-id/wwn-0x{export.engine.identity.naa().hex()}"


def backstore_name(instance: str, volume: str, lun: int) -> str:
    name = f"{instance}_{volume}"
    return name if len(name) <= MAX_BACKSTORE_NAME else f"{instance}_lun{lun}"


def _chap(chap: Chap | None, mutual: Chap | None) -> configfs.Chap | None:
    if chap is None:
        return None
    return configfs.Chap(
        chap.userid,
        chap.password,
        mutual.userid if mutual else None,
        mutual.password if mutual else None,
    )


def build_target_state(
    config: VsaConfig, exports: Iterable[Export], *, unexported: Iterable[str] = ()
) -> configfs.TargetState:
    """The desired kernel state. Volumes named in `unexported` keep their backstore
    but lose their LUN (the first step of removing one while its handler still serves)."""
    exports = sorted(exports, key=lambda e: e.lun)
    hidden = set(unexported)
    backstores = tuple(
        configfs.UserBackstore(
            name=e.backstore,
            dev_config=f"thur/{e.backstore}",
            size_bytes=e.kernel_size,
            wwn_serial=e.serial,
            hw_block_size=e.block_size,
            hw_max_sectors=MAX_TRANSFER_BYTES // e.block_size,
            max_data_area_mb=config.tcmu.max_data_area_mb,
            cmd_time_out=config.tcmu.cmd_time_out,
            qfull_time_out=config.tcmu.qfull_time_out,
        )
        for e in exports
    )
    shown = tuple(e for e in exports if e.name not in hidden)
    iscsi_targets = (_iscsi_target(config, shown),) if config.iscsi_enabled else ()
    loops: tuple[configfs.LoopbackTarget, ...] = ()
    subsystems: tuple[configfs.NvmeSubsystem, ...] = ()
    hosts: tuple[configfs.NvmeHost, ...] = ()
    if config.nvme_enabled:
        wwn = loop_wwn(config.instance)
        loops = (configfs.LoopbackTarget(
            wwn=wwn, nexus_wwn=loop_nexus(config.instance),
            luns=tuple(configfs.Lun(e.lun, e.backstore) for e in shown)),)
        subsystems = (_subsystem(config, shown, wwn),)
        hosts = config.nvme.hosts
    return configfs.TargetState(
        db_root=config.lio_db_root,
        backstores=backstores,
        iscsi_targets=iscsi_targets,
        loopback_targets=loops,
        discovery_auth=(_chap(config.iscsi.discovery_chap, None)
                        if config.iscsi_enabled else None),
        nvme_hosts=hosts,
        nvme_subsystems=subsystems,
    )


def _subsystem(config: VsaConfig, shown: tuple[Export, ...], wwn: str) -> configfs.NvmeSubsystem:
    nvme = config.nvme
    return configfs.NvmeSubsystem(
        nqn=nvme.subsystem_nqn,
        serial=_hex(f"subsystem:{nvme.subsystem_nqn}", 20),
        namespaces=tuple(
            configfs.NvmeNamespace(
                nsid=nsid(e.lun),
                device_path=by_id_path(e),
                device_uuid=str(uuid.UUID(_hex(f"uuid:{e.serial}", 32), version=4)),
                device_nguid=str(uuid.UUID(_hex(f"nguid:{e.serial}", 32))),
                loop=configfs.LoopRef(wwn, e.lun),
            )
            for e in shown
        ),
        ports=tuple(configfs.NvmePort(traddr=p.ip, trsvcid=p.port, tls=nvme.tls)
                    for p in nvme.listen),
        allowed_hosts=tuple(h.nqn for h in nvme.hosts),
    )


def _iscsi_target(config: VsaConfig, shown: tuple[Export, ...]) -> configfs.IscsiTarget:
    iscsi = config.iscsi
    chap = _chap(iscsi.chap, iscsi.mutual_chap)
    acls = tuple(configfs.NodeAcl(initiator, chap=chap) for initiator in iscsi.initiators)
    return configfs.IscsiTarget(
        iqn=iscsi.target_iqn,
        portals=tuple(configfs.Portal(p.ip, p.port) for p in iscsi.listen),
        luns=tuple(configfs.Lun(e.lun, e.backstore) for e in shown),
        acls=acls,
        authentication=chap is not None,
        chap=chap if not acls else None,
        demo_mode=not acls,
    )

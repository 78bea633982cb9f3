"""What thurvsad exports: one user backstore per volume, one iSCSI target.

A volume is LUN `volume.lun` (stable for its life, kept in its manifest). Its
backstore is `<instance>_<volume name>` (or `<instance>_lun<N>` when that
would pass configfs's 64-character limit), with the volume's serial as the
WWN unit serial, 4096-byte blocks and at most 8 MiB per command (the SBC
engine's VPD B0h promise, `DiskLimits.max_transfer_bytes`).
"""

from __future__ import annotations

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
    iscsi = config.iscsi
    chap = _chap(iscsi.chap, iscsi.mutual_chap)
    acls = tuple(configfs.NodeAcl(initiator, chap=chap) for initiator in iscsi.initiators)
    target = configfs.IscsiTarget(
        iqn=iscsi.target_iqn,
        portals=tuple(configfs.Portal(p.ip, p.port) for p in iscsi.listen),
        luns=tuple(configfs.Lun(e.lun, e.backstore) for e in exports if e.name not in hidden),
        acls=acls,
        authentication=chap is not None,
        chap=chap if not acls else None,
        demo_mode=not acls,
    )
    return configfs.TargetState(
        db_root=config.lio_db_root,
        backstores=backstores,
        iscsi_targets=(target,),
        discovery_auth=_chap(iscsi.discovery_chap, None),
    )

"""What thurvtld exports: its logical units and the kernel state that serves them.

LUN 0 is the changer, LUNs 1..N the drives. Backstore names carry the
instance name so two daemons (or another LIO user) can share a host.
"""

from __future__ import annotations

from dataclasses import dataclass

import configfs
from handlers.scsi import (
    ChangerModel,
    MediumChanger,
    ScsiDevice,
    TapeDrive,
    changer_identity,
    tape_drive_identity,
)
from thur.config import Chap, VtlConfig
from thur.library import LibraryIdentity

# The kernel wants a size for every backstore; a tape LU's is never used by
# the SCSI commands we serve, so any small value does.
NOMINAL_LU_SIZE = 1 << 30
# Largest transfer the kernel hands us in one command: 8 MiB (16384 x 512 B).
# Tape records can be up to 16 MiB - 1, but Linux st and backup software stay
# far below 8 MiB; the ring's data area must hold at least one such command.
HW_BLOCK_SIZE = 512
HW_MAX_SECTORS = 16384


@dataclass(frozen=True)
class LogicalUnit:
    lun: int
    name: str
    engine: ScsiDevice


def build_drives(config: VtlConfig, identity: LibraryIdentity) -> list[TapeDrive]:
    """One drive engine per configured drive, with its minted serial."""
    serials = identity.drive_serials[: config.library.num_drives]
    return [TapeDrive(tape_drive_identity(serial)) for serial in serials]


def build_units(
    config: VtlConfig, identity: LibraryIdentity, model: ChangerModel, drives: list[TapeDrive]
) -> list[LogicalUnit]:
    """The changer LU over the library model (LUN 0) and the drive LUs (LUNs 1..N)."""
    changer = MediumChanger(changer_identity(identity.chassis_serial), model)
    units = [LogicalUnit(0, f"{config.instance}_changer", changer)]
    units += [
        LogicalUnit(i + 1, f"{config.instance}_drive{i}", drive) for i, drive in enumerate(drives)
    ]
    return units


def _chap(chap: Chap | None, mutual: Chap | None) -> configfs.Chap | None:
    if chap is None:
        return None
    return configfs.Chap(
        chap.userid,
        chap.password,
        mutual.userid if mutual else None,
        mutual.password if mutual else None,
    )


def build_target_state(config: VtlConfig, units: list[LogicalUnit]) -> configfs.TargetState:
    """The desired kernel state: one user backstore per unit and one iSCSI target."""
    backstores = tuple(
        configfs.UserBackstore(
            name=unit.name,
            dev_config=f"thur/{unit.name}",
            size_bytes=NOMINAL_LU_SIZE,
            wwn_serial=unit.engine.identity.serial,
            hw_block_size=HW_BLOCK_SIZE,
            hw_max_sectors=HW_MAX_SECTORS,
            max_data_area_mb=config.tcmu.max_data_area_mb,
            cmd_time_out=config.tcmu.cmd_time_out,
            qfull_time_out=config.tcmu.qfull_time_out,
        )
        for unit in units
    )
    iscsi = config.iscsi
    chap = _chap(iscsi.chap, iscsi.mutual_chap)
    acls = tuple(configfs.NodeAcl(initiator, chap=chap) for initiator in iscsi.initiators)
    target = configfs.IscsiTarget(
        iqn=iscsi.target_iqn,
        portals=tuple(configfs.Portal(p.ip, p.port) for p in iscsi.listen),
        luns=tuple(configfs.Lun(unit.lun, unit.name) for unit in units),
        acls=acls,
        authentication=chap is not None,
        # Demo mode (any initiator) only when no initiator list is configured;
        # its CHAP then lives on the TPG.
        chap=chap if not acls else None,
        demo_mode=not acls,
    )
    return configfs.TargetState(
        db_root=config.lio_db_root,
        backstores=backstores,
        iscsi_targets=(target,),
        discovery_auth=_chap(iscsi.discovery_chap, None),
    )

"""Thin volumes: the `Volume` contract, its errors and the pool-backed implementation.

- `Volume` (contract, protocol.py) and its errors: `VolumeError`, `OutOfRange`,
  `WriteProtected`, `MediumCorrupt`, `BackendFailure`, `Backpressure`,
  `ShrinkRefused`.
- `PoolVolume` (production, over the chunk pool; also a GC `ChunkOwner`) and
  its tuning `VolumeConfig`.
- `VolumeStore` (volumes by name under a data dir, replicated to the bucket)
  and its errors `VolumeStoreError`, `VolumeExists`, `UnknownVolume`,
  `LunInUse`; names are checked by `check_name` (`InvalidVolumeName`).
"""

from thur.volume.core import VolumeConfig
from thur.volume.manifest import DEFAULT_PAGE_SIZE, InvalidVolumeName, check_name
from thur.volume.protocol import (
    BackendFailure,
    Backpressure,
    MediumCorrupt,
    OutOfRange,
    ShrinkRefused,
    Volume,
    VolumeError,
    WriteProtected,
)
from thur.volume.store import (
    LunInUse,
    UnknownVolume,
    VolumeExists,
    VolumeStore,
    VolumeStoreError,
)
from thur.volume.volume import PoolVolume

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "BackendFailure",
    "Backpressure",
    "InvalidVolumeName",
    "LunInUse",
    "MediumCorrupt",
    "OutOfRange",
    "PoolVolume",
    "ShrinkRefused",
    "UnknownVolume",
    "Volume",
    "VolumeConfig",
    "VolumeError",
    "VolumeExists",
    "VolumeStore",
    "VolumeStoreError",
    "WriteProtected",
    "check_name",
]

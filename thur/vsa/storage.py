"""Where thurvsad keeps volumes: the chunk pool, its backend, the volume store.

Mirrors thur/vtl/storage.py: with no cloud configured the backend is a
directory under data_dir (same layout as a bucket).
"""

from __future__ import annotations

import logging
from pathlib import Path

from thur.cloud import check
from thur.storage_config import BackendConfig, PoolSettings, StorageUnavailable, build_tier
from thur.volume import VolumeConfig, VolumeStore

log = logging.getLogger(__name__)


class VsaStorage:
    """The storage object graph of one thurvsad, started and stopped as a unit."""

    def __init__(
        self,
        data_dir: Path,
        volume_config: VolumeConfig | None = None,
        backend: BackendConfig | None = None,
        pool: PoolSettings | None = None,
    ) -> None:
        self.backend, self.tier = build_tier(data_dir, backend, pool)
        self.volumes = VolumeStore(data_dir / "volumes", self.tier, config=volume_config)

    def start(self) -> None:
        """Backend checked (credentials, bucket, write/read/delete), index synced,
        volumes only the bucket has restored, background replication started."""
        report = check(self.backend)
        if not report.ok:
            raise StorageUnavailable(str(report))
        self.tier.sync_index()
        self.tier.start()
        restored = self.volumes.restore_all()
        if restored:
            log.info("restored %d volumes from the backend: %s", len(restored), restored)
        self.volumes.start()

    def shutdown(self) -> None:
        """After the rings are drained: flush and publish every open volume, then
        upload what the tier holds and stop it."""
        self.volumes.shutdown()
        self.tier.flush()
        self.tier.close()

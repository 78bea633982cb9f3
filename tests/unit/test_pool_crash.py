"""Crash consistency: SIGKILL a process mid-ingest/upload, reopen, lose nothing acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from thur.cloud import LocalBackend, PackIndex, TierConfig, TieredPool
from thur.pool import LocalStore, PoolConfig

CHILD = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from thur.cloud import LocalBackend, PackIndex, TierConfig, TieredPool
    from thur.pool import LocalStore, PoolConfig

    root = Path(sys.argv[1])
    store = LocalStore(PoolConfig(root / "pool", budget_bytes=64 << 20, disk_free_floor=0))
    tier = TieredPool(store, LocalBackend(root / "bucket"), PackIndex(root / "index.sqlite"),
                      TierConfig(pack_target=256 << 10, workers=4))
    rnd = random.Random(int(sys.argv[2]))
    for i in range(100000):
        data = rnd.randbytes(rnd.randint(1000, 60000)) * rnd.randint(1, 3)
        r = tier.put(data)
        # Acknowledged: the chunk id reaches the parent only after put() returned.
        sys.stdout.write(r.chunk_id.hex() + "\\n")
        sys.stdout.flush()
        if i % 7 == 6:
            tier.flush()
    """
)


def _open(root: Path) -> TieredPool:
    store = LocalStore(PoolConfig(root / "pool", budget_bytes=64 << 20, disk_free_floor=0))
    return TieredPool(
        store,
        LocalBackend(root / "bucket"),
        PackIndex(root / "index.sqlite"),
        TierConfig(pack_target=256 << 10, workers=4),
    )


@pytest.mark.parametrize("seed,kill_after", [(1, 5), (2, 23), (3, 41), (4, 60)])
def test_sigkill_mid_ingest_loses_nothing_acknowledged(
    tmp_path: Path, seed: int, kill_after: int
) -> None:
    (tmp_path / "bucket").mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), str(seed)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert child.stdout is not None
    acked: list[bytes] = []
    try:
        for line in child.stdout:
            acked.append(bytes.fromhex(line.strip()))
            if len(acked) >= kill_after:
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    assert len(acked) == kill_after, "child died before the kill"

    tier = _open(tmp_path)
    rec = tier.store.recovery
    assert rec.lost_pinned == []
    assert not os.listdir(tmp_path / "pool" / "tmp")
    assert not os.listdir(tmp_path / "bucket" / ".tmp")
    tier.sync_index()  # packs uploaded without their index file are found again
    for cid in acked:
        assert tier.store.contains(cid) or cid in tier.index
        tier.get(cid)  # verified bytes (raises ChunkCorrupt / ChunkMissing otherwise)
    tier.flush()
    assert tier.store.stats().pinned_bytes == 0
    for cid in acked:
        tier.store.discard(cid)
        tier.get(cid)  # every acknowledged chunk is now readable from the bucket alone
    tier.close()

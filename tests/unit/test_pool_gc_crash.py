"""GC crash consistency with a real SIGKILL: kill a process mid-GC, reopen, lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from thur.cloud import GarbageCollector, GcConfig, LocalBackend, PackIndex, TierConfig, TieredPool
from thur.pool import LocalStore, PoolConfig

CHILD = textwrap.dedent(
    """
    import json, os, random, sys
    from pathlib import Path
    from thur.cloud import (GarbageCollector, GcConfig, LocalBackend, PackIndex,
                            TierConfig, TieredPool)
    from thur.pool import LocalStore, PoolConfig

    root = Path(sys.argv[1])
    store = LocalStore(PoolConfig(root / "pool", budget_bytes=64 << 20, disk_free_floor=0))
    tier = TieredPool(store, LocalBackend(root / "bucket"), PackIndex(root / "index.sqlite"),
                      TierConfig(pack_target=64 << 10, workers=2, index_batch_packs=3))
    rnd = random.Random(int(sys.argv[2]))
    owners = {f"o{i}": [] for i in range(4)}

    class Owner:
        def __init__(self, name): self.name = name
        def chunk_ids(self): return [bytes.fromhex(h) for h in owners[self.name]]

    def persist():  # the owners' metadata: tmp + fsync + rename
        tmp = root / "owners.tmp"
        with open(tmp, "w") as f:
            json.dump(owners, f); f.flush(); os.fsync(f.fileno())
        os.replace(tmp, root / "owners.json")

    blobs = [rnd.randbytes(2000) * rnd.randint(1, 6) for _ in range(40)]
    gc = GarbageCollector(tier, lambda: [Owner(n) for n in owners],
                          GcConfig(grace=0.0, repack_below=0.7))
    for step in range(100000):
        name = rnd.choice(list(owners))
        if rnd.random() < 0.3:
            owners[name] = owners[name][: rnd.randint(0, 3)]
            persist()  # a drop is persisted before GC can see it
        else:
            for b in rnd.sample(blobs, 4):
                owners[name].append(tier.put(b).chunk_id.hex())
            persist()
        if step % 3 == 2:
            tier.flush()
            print("gc", flush=True)
            gc.run()
    """
)


def _open(root: Path) -> TieredPool:
    store = LocalStore(PoolConfig(root / "pool", budget_bytes=64 << 20, disk_free_floor=0))
    return TieredPool(
        store,
        LocalBackend(root / "bucket"),
        PackIndex(root / "index.sqlite"),
        TierConfig(pack_target=64 << 10, workers=2, index_batch_packs=3),
    )


@pytest.mark.parametrize("seed,gcs,delay", [(1, 2, 0.0), (2, 3, 0.004), (3, 4, 0.012)])
def test_sigkill_mid_gc_loses_no_referenced_chunk(
    tmp_path: Path, seed: int, gcs: int, delay: float
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
    seen = 0
    try:
        for line in child.stdout:
            seen += line.startswith("gc")
            if seen >= gcs:
                time.sleep(delay)
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    assert seen == gcs, "child died before the kill"

    owners = json.loads((tmp_path / "owners.json").read_text())
    referenced = {bytes.fromhex(h) for ids in owners.values() for h in ids}
    tier = _open(tmp_path)
    assert tier.store.recovery.lost_pinned == []
    for cid in referenced:
        tier.get(cid)  # verified bytes, or ChunkMissing / ChunkCorrupt
    tier.sync_index()
    tier.flush()

    class Owner:
        name = "all"

        def chunk_ids(self) -> set[bytes]:
            return referenced

    GarbageCollector(tier, lambda: [Owner()], GcConfig(grace=0.0)).run()
    for cid in referenced:
        tier.store.discard(cid)
        tier.get(cid)  # from the bucket alone, after a clean GC
    tier.close()

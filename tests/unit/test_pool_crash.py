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
from thur.pool.chunkid import CHUNK_ID_LEN

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


# ---- the batched path: submit() + group commit ------------------------------

BATCH_CHILD = textwrap.dedent(
    """
    import os, random, signal, sys
    from collections import deque
    from pathlib import Path
    from thur.cloud import LocalBackend, PackIndex, TierConfig, TieredPool
    from thur.pool import LocalStore, PoolConfig

    root, seed, point, nth = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    store = LocalStore(PoolConfig(root / "pool", budget_bytes=64 << 20, disk_free_floor=0,
                                  put_workers=4, submit_window=1 << 20))
    tier = TieredPool(store, LocalBackend(root / "bucket"), PackIndex(root / "index.sqlite"),
                      TierConfig(pack_target=256 << 10, workers=4))
    calls = 0

    def die_at(where):
        global calls
        if where == point:
            calls += 1
            if calls >= nth:
                os.kill(os.getpid(), signal.SIGKILL)

    # Crash points inside one group commit: records appended (segments not yet
    # flushed); segments flushed, rows not committed; rows committed, writers
    # not yet told.
    sync, commit = store._segs.sync, store._committer._commit_many
    def sync_then(segs):
        die_at("staged")
        sync(segs)
        die_at("synced")
    def commit_then(batch):
        commit(batch)
        die_at("committed")
    store._segs.sync = sync_then
    store._committer._commit_many = commit_then
    tier.start()
    rnd = random.Random(seed)
    pending = deque()
    for i in range(5000):  # far more than any crash point needs
        data = rnd.randbytes(rnd.randint(1000, 60000)) * rnd.randint(1, 3)
        pending.append(tier.submit(data))
        while pending and (pending[0].done() or len(pending) > 16):
            # Acknowledged: reported only once the future says durable.
            sys.stdout.write(pending.popleft().result().chunk_id.hex() + "\\n")
            sys.stdout.flush()
        if point == "anywhere" and i == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize(
    "point,nth",
    [("staged", 9), ("synced", 14), ("committed", 11), ("anywhere", 40), ("anywhere", 90)],
)
def test_sigkill_inside_group_commit_loses_nothing_acknowledged(
    tmp_path: Path, point: str, nth: int
) -> None:
    (tmp_path / "bucket").mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.run(
        [sys.executable, "-c", BATCH_CHILD, str(tmp_path), str(nth), point, str(nth)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, "the crash point was never reached"
    acked = [bytes.fromhex(line) for line in child.stdout.split()]
    assert acked, "nothing was acknowledged before the crash"

    tier = _open(tmp_path)
    rec = tier.store.recovery
    assert rec.lost_pinned == []
    assert not os.listdir(tmp_path / "pool" / "tmp")
    if point in ("staged", "synced"):
        # The killed batch's records had no rows: cut off, or their segment removed.
        assert rec.segments_trimmed + rec.orphans_swept >= 1
    assert_only_rows_hold_bytes(tier.store)
    tier.sync_index()
    for cid in acked:
        tier.get(cid)  # verified bytes (raises ChunkCorrupt / ChunkMissing otherwise)
    tier.flush()
    for cid in acked:
        tier.store.discard(cid)
        tier.get(cid)  # and from the bucket alone
    tier.close()


def assert_only_rows_hold_bytes(store: LocalStore) -> None:
    """Segments and rows are in step: every segment ends with a row's record, and
    every byte no row points at is freed (a hole, or zeroed where a block is shared)."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for page in store.scan(1000):
        for cid, _size, _seq in page:
            path, off, length = store.locate(cid)
            start = off - CHUNK_ID_LEN  # the record starts with the chunk's id
            ranges.setdefault(path, []).append((start, off + length))
    segments = sorted(str(p) for p in (store.root / "segments").iterdir())
    assert segments == sorted(ranges)  # no segment without rows, no row without a segment
    for path, spans in ranges.items():
        raw = bytearray(Path(path).read_bytes())
        assert len(raw) == max(end for _start, end in spans)
        for start, end in spans:
            raw[start:end] = bytes(end - start)
        assert not any(raw), f"{path} holds bytes no row points at"


# ---- pipelined put_many: writers stage the next chunks while a batch commits --

PIPE_CHILD = textwrap.dedent(
    """
    import os, random, signal, sys, threading, time
    from pathlib import Path
    from thur.pool import LocalStore, PoolConfig

    root, seed = Path(sys.argv[1]), int(sys.argv[2])
    store = LocalStore(PoolConfig(root / "pool", budget_bytes=1 << 30, disk_free_floor=0,
                                  put_workers=4, submit_window=1 << 20))
    rnd = random.Random(seed)
    # SIGKILL at a random moment: anywhere in staging, segment flushes,
    # the commit, or the callbacks, with the next chunks already staged.
    threading.Timer(rnd.uniform(0.2, 1.5), os.kill, (os.getpid(), signal.SIGKILL)).start()
    while True:
        batch = [rnd.randbytes(rnd.randint(1000, 70000)) for _ in range(rnd.randint(1, 40))]
        results = store.put_many(batch)
        # Acknowledged: put_many returned, every chunk of the batch is durable.
        sys.stdout.write("".join(r.chunk_id.hex() + "\\n" for r in results))
        sys.stdout.flush()
    """
)


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_sigkill_mid_pipelined_put_many_keeps_segments_and_rows_in_step(
    tmp_path: Path, seed: int
) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.run(
        [sys.executable, "-c", PIPE_CHILD, str(tmp_path), str(seed)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL
    acked = [bytes.fromhex(line) for line in child.stdout.split()]
    store = LocalStore(PoolConfig(tmp_path / "pool", budget_bytes=1 << 30, disk_free_floor=0))
    assert store.recovery.lost_pinned == []  # no row ever pointed at missing bytes
    assert not os.listdir(tmp_path / "pool" / "tmp")
    assert_only_rows_hold_bytes(store)  # unacknowledged records were freed, nothing else
    for cid in acked:
        store.get(cid)  # verified bytes (ChunkMissing / ChunkCorrupt otherwise)
    rows = [cid for page in store.scan(1000) for cid, _size, _seq in page]
    assert store.stats().chunks == len(rows)
    store.close()

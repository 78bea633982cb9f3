"""Property: random writes, deletes, uploads, evictions, GC runs and crashes never lose
a referenced chunk; and a clean GC at the end leaves only referenced chunks in the bucket.

Crashes are simulated in-process: the backend raises `Crash` just before or just
after its k-th mutating call (so every point between two bucket operations, and
between a bucket operation and a local commit, is reachable), the process'
objects are abandoned, and the pool is reopened from disk. A SIGKILL variant
with a real subprocess lives in test_pool_gc_crash.py.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from thur.cloud import GarbageCollector, GcConfig, LocalBackend, PackIndex, TierConfig, TieredPool
from thur.cloud.index import INDEX_PREFIX, decode_index_file
from thur.cloud.pack import pack_id_from_key, parse_pack
from thur.pool import Codec, CompressionPolicy, LocalStore, ManualClock, PoolConfig, chunk_id

UNIVERSE = [(f"[{i}]".encode() * 700)[: 1500 + 331 * i] for i in range(14)]
IDS = [chunk_id(d) for d in UNIVERSE]


class Crash(BaseException):
    """The process dies here (BaseException: nothing on the way may swallow it)."""


class FaultyBackend(LocalBackend):
    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.countdown: int | None = None
        self.after = False

    def _tick(self) -> None:
        if self.countdown is not None:
            self.countdown -= 1
            if self.countdown < 0:
                self.countdown = None
                raise Crash

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if not self.after:
            self._tick()
        super().put(key, data, if_absent=if_absent)
        if self.after:
            self._tick()

    def delete(self, key: str) -> None:
        if not self.after:
            self._tick()
        super().delete(key)
        if self.after:
            self._tick()


@dataclass
class Owner:
    name: str
    ids: list[bytes] = field(default_factory=list)

    def chunk_ids(self) -> list[bytes]:
        return list(self.ids)


class World:
    def __init__(self, root: Path, codec: Codec) -> None:
        self.root = root
        self.codec = codec
        (root / "bucket").mkdir()
        self.backend = FaultyBackend(root / "bucket")
        self.owners = [Owner(f"o{i}") for i in range(3)]
        self.tier = self._open()

    def _open(self) -> TieredPool:
        clock = ManualClock()
        store = LocalStore(
            PoolConfig(
                self.root / "pool",
                budget_bytes=1 << 22,
                disk_free_floor=0,
                fsync=False,
                max_wait=0.0,
                compression=CompressionPolicy(self.codec),
            ),
            clock=clock,
        )
        index = PackIndex(self.root / "pool" / "index.sqlite")
        config = TierConfig(pack_target=6_000, workers=2, index_batch_packs=2)
        return TieredPool(store, self.backend, index, config, clock=clock)

    def restart(self, sync: bool) -> None:
        old = self.tier
        old.close()
        old.store.close()
        old.index.close()
        self.tier = self._open()
        if sync:
            self.tier.sync_index()

    def gc(self, repack_below: float, crash_at: int | None, after: bool) -> None:
        self.backend.countdown, self.backend.after = crash_at, after
        try:
            GarbageCollector(
                self.tier, lambda: self.owners, GcConfig(grace=1.0, repack_below=repack_below)
            ).run()
        except Crash:
            self.restart(sync=bool(crash_at and crash_at % 2))
        finally:
            self.backend.countdown = None

    def crash_flush(self, crash_at: int, after: bool) -> None:
        self.backend.countdown, self.backend.after = crash_at, after
        try:
            self.tier.flush()
        except Crash:
            self.restart(sync=crash_at % 2 == 1)
        finally:
            self.backend.countdown = None

    def referenced(self) -> set[int]:
        return {IDS.index(c) for o in self.owners for c in o.ids}

    def check(self) -> None:
        for i in sorted(self.referenced()):
            assert self.tier.get(IDS[i]) == UNIVERSE[i], f"referenced chunk {i} lost"


ops = st.one_of(
    st.tuples(
        st.just("write"),
        st.integers(0, 2),
        st.lists(st.integers(0, len(UNIVERSE) - 1), min_size=1, max_size=5),
    ),
    st.tuples(st.just("drop"), st.integers(0, 2), st.integers(0, 4)),
    st.tuples(st.just("flush")),
    st.tuples(st.just("crash_flush"), st.integers(0, 4), st.booleans()),
    st.tuples(st.just("evict")),
    st.tuples(st.just("restart"), st.booleans()),
    st.tuples(st.just("gc"), st.sampled_from([0.3, 0.6, 0.95])),
    st.tuples(st.just("crash_gc"), st.sampled_from([0.3, 0.95]), st.integers(0, 12), st.booleans()),
)


def run(world: World, program: list[tuple]) -> None:  # type: ignore[type-arg]
    for op in program:
        kind = op[0]
        if kind == "write":
            owner = world.owners[op[1]]
            for i in op[2]:
                owner.ids.append(world.tier.put(UNIVERSE[i]).chunk_id)
        elif kind == "drop":  # delete a cartridge's tail (or all of it)
            owner = world.owners[op[1]]
            del owner.ids[op[2] :]
        elif kind == "flush":
            world.tier.flush()
        elif kind == "crash_flush":
            world.crash_flush(op[1], op[2])
        elif kind == "evict":
            for cid in IDS:
                if world.tier.store.is_durable(cid):
                    world.tier.store.discard(cid)
        elif kind == "restart":
            world.restart(op[1])
        elif kind == "gc":
            world.gc(op[1], None, False)
        else:
            world.gc(op[1], op[2], op[3])
        world.check()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Pinned cases: a crash between a batch's pack PUTs and its index PUT, then
# eviction; a GC crashing between its new index file and its commit.
@example(program=[("write", 0, [1, 2, 3]), ("crash_flush", 2, False), ("evict",)], codec=Codec.NONE)
@example(
    program=[
        ("write", 0, [1, 2, 3, 4, 5]),
        ("flush",),
        ("drop", 0, 2),
        ("evict",),
        ("crash_gc", 0.95, 1, True),
        ("evict",),
        ("gc", 0.3),
    ],
    codec=Codec.ZSTD,
)
@given(
    program=st.lists(ops, min_size=1, max_size=14),
    codec=st.sampled_from([Codec.NONE, Codec.ZSTD]),
)
def test_no_referenced_chunk_is_ever_lost(program: list[tuple], codec: Codec) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp), codec)
        try:
            run(world, program)
            # A clean ending: upload, collect twice (the first may leave garbage
            # a crashed run re-created), then the bucket holds only live chunks.
            world.tier.flush()
            world.gc(0.999, None, False)
            world.gc(0.999, None, False)
            world.check()
            live = {IDS[i] for i in world.referenced()}
            backend = world.backend
            packs = {pack_id_from_key(i.key) for i in backend.list("packs/")}
            for pid in packs:
                assert pid is not None
                stored = parse_pack(pid, backend.get(f"packs/{pid.hex()[:2]}/{pid.hex()}"))
                assert {e.chunk_id for e in stored} <= live, "garbage survived a clean GC"
            for info in backend.list(INDEX_PREFIX):
                for e in decode_index_file(info.key, backend.get(info.key)):
                    assert e.pack_id in packs, "an index file names a missing pack"
            for cid, _size in world.tier.store.pending():
                assert cid in live
        finally:
            world.tier.close()

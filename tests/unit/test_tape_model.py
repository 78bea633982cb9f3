"""Model-based test: random command sequences give the same results on the pool-backed
cartridge as on the reference MemoryCartridge, including across crashes and reopens."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.unit.tape_kit import make_store
from thur.tape import EndOfData, MemoryCartridge, TapeError
from thur.tape.cartridge import Cartridge

CAP = 400_000
sizes = st.sampled_from([0, 1, 3000, 17_000, 70_000])


class CartridgeVsMemory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="thur-tape-model-"))
        self.store = make_store(self.dir)
        self.real: Cartridge = self.store.create("MOD001L8", capacity=CAP)
        self.model = MemoryCartridge("MOD001L8", CAP)
        self.durable: list[list[bytes | None]] = [[]]  # model contents at the last commit
        self.cut: list[int] = [1 << 30]  # per partition: lowest position truncated since
        self.counter = 0

    def teardown(self) -> None:
        self.store.shutdown(replicate=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def committed(self) -> None:
        self.durable = [list(p) for p in self.model._parts]
        self.cut = [1 << 30 for _ in self.durable]

    def both(self, name: str, *args: object) -> None:
        before = self.model.position()
        truncating = name in ("write", "write_filemarks", "erase") and before.object_id < len(
            self.model._parts[before.partition]
        )
        outcomes = []
        for m in (self.model, self.real):
            try:
                outcomes.append(("ok", getattr(m, name)(*args)))
            except TapeError as e:
                outcomes.append(("err", type(e).__name__))
        assert outcomes[0] == outcomes[1], (name, args, outcomes)
        if truncating and outcomes[0][0] == "ok" and (name != "write_filemarks" or args[0]):
            self.cut[before.partition] = min(self.cut[before.partition], before.object_id)

    def record(self, size: int) -> bytes:
        self.counter += 1
        return (self.counter.to_bytes(4, "little") * (size // 4 + 1))[:size]

    @rule(size=sizes)
    def write(self, size: int) -> None:
        self.both("write", self.record(size))

    @rule(count=st.integers(0, 2))
    def write_filemarks(self, count: int) -> None:
        self.both("write_filemarks", count)
        self.committed()

    @rule(partition=st.integers(0, 2), obj=st.integers(0, 40))
    def locate(self, partition: int, obj: int) -> None:
        self.both("locate", partition, obj)

    @rule(count=st.integers(-6, 6))
    def space_records(self, count: int) -> None:
        self.both("space_records", count)

    @rule(count=st.integers(-3, 3))
    def space_filemarks(self, count: int) -> None:
        self.both("space_filemarks", count)

    @rule()
    def space_eod(self) -> None:
        self.both("space_eod")

    @rule()
    def read(self) -> None:
        self.both("read")

    @rule()
    def erase(self) -> None:
        self.both("erase")

    @rule(first=st.sampled_from([None, 100_000, 300_000]))
    def format(self, first: int | None) -> None:
        self.both("format", None if first is None else [first, 0])
        self.committed()

    @rule()
    def flush_and_reopen(self) -> None:
        self.both("flush")
        self.committed()
        self.store.close("MOD001L8")
        self.real = self.store.open("MOD001L8")
        self.model.locate(0, 0)

    @precondition(lambda self: len(self.durable) == len(self.model._parts))
    @rule()
    def crash(self) -> None:
        """Drop the object without closing it: RAM state is lost, like kill -9."""
        self.store._open.pop("MOD001L8")
        self.real = self.store.open("MOD001L8")
        got: list[list[bytes | None]] = []
        for p in range(len(self.model._parts)):
            self.real.locate(p, 0)
            objs: list[bytes | None] = []
            while True:
                try:
                    objs.append(self.real.read())
                except EndOfData:
                    break
            got.append(objs)
        # Durable contents survive, unless the host cut them since (then the cut did).
        for p, objs in enumerate(got):
            durable, now = self.durable[p], self.model._parts[p]
            common = next(
                (i for i, (a, b) in enumerate(zip(durable, now, strict=False)) if a != b), None
            )
            if common is None:
                common = min(len(durable), len(now))
            common = min(common, self.cut[p])
            assert objs[:common] == durable[:common]
            assert objs == durable[: len(objs)] or objs == now[: len(objs)]
        # Continue from what survived.
        self.model._parts = [list(o) for o in got]
        self.committed()
        self.model.locate(0, 0)
        self.real.locate(0, 0)

    @invariant()
    def same_position(self) -> None:
        assert self.model.position() == self.real.position()
        for p in range(len(self.model.partition_capacities())):
            assert self.model.partition_used(p) == self.real.partition_used(p)


CartridgeVsMemory.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCartridgeVsMemory = CartridgeVsMemory.TestCase

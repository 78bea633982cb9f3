"""The pool-backed cartridge passes the Medium contract, and keeps its promises on disk."""

from __future__ import annotations

import gc
import os
import random
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from tests.unit.tape_contract import MB, MediumContract
from tests.unit.tape_kit import SMALL_CHUNKS, make_store
from thur.pool import BackpressureTimeout
from thur.tape import Backpressure, Medium
from thur.tape.cartridge import Cartridge
from thur.tape.manifest import Manifest, PartitionState
from thur.tape.store import CartridgeStore


class TestCartridgeContract(MediumContract):
    @pytest.fixture(autouse=True)
    def _store(self, tmp_path: Path):  # noqa: ANN202 - fixture
        self.store = make_store(tmp_path, chunker=SMALL_CHUNKS)
        yield
        self.store.shutdown()

    def make(self, capacity: int = 100 * MB, worm: bool = False) -> Medium:
        n = len(self.store.list())
        return self.store.create(f"TST{n:03d}L8", worm=worm, capacity=capacity)


# ---- beyond the contract -------------------------------------------------------------

KiB = 1024


def records(n: int, seed: int = 0) -> list[bytes | None]:
    rnd = random.Random(seed)
    out: list[bytes | None] = []
    for _ in range(n):
        if rnd.random() < 0.1:
            out.append(None)
        else:
            out.append(rnd.randbytes(rnd.choice([1, 100, 5000, 30 * KiB, 100 * KiB])))
    return out


def write_all(m: Cartridge, objs: list[bytes | None]) -> None:
    for o in objs:
        if o is None:
            m.write_filemarks(1)
        else:
            m.write(o)


def read_all(m: Cartridge, partition: int = 0) -> list[bytes | None]:
    m.locate(partition, 0)
    out: list[bytes | None] = []
    while not m.position().eod:
        out.append(m.read())
    return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CartridgeStore]:
    s = make_store(tmp_path)
    yield s
    s.shutdown(replicate=False)


def reopen(store: CartridgeStore, cart: Cartridge) -> Cartridge:
    """A new object over the same directory, without closing the old one: what a
    kill -9 leaves (RAM buffers and uncommitted entries are simply gone)."""
    return Cartridge(cart.path, store.pool)


def test_reopen_after_close_shows_the_same(store: CartridgeStore) -> None:
    cart = store.create("REO001L8", capacity=100 * MB)
    cart.format([2 * MB, 0])
    objs = records(60, seed=1)
    write_all(cart, objs)
    cart.locate(1, 0)
    cart.write(b"p1-record")
    cart.set_host_attribute(0x0800, b"THUR")
    cart.unloaded()
    store.close("REO001L8")
    again = store.open("REO001L8")
    assert again is not cart
    assert read_all(again) == objs
    assert read_all(again, 1) == [b"p1-record"]
    assert again.host_attributes() == {0x0800: b"THUR"}
    assert again.load_count == 1
    assert list(again.partition_capacities()) == [2 * MB, 98 * MB]
    assert again.partition_used(0) == sum(len(o) for o in objs if o)


def test_crash_keeps_the_last_durability_point(store: CartridgeStore) -> None:
    cart = store.create("CRA001L8")
    durable = records(40, seed=2)
    write_all(cart, durable)
    cart.write_filemarks(0)
    for o in records(30, seed=3):  # written, never flushed
        if o is not None:
            cart.write(o)
    got = read_all(reopen(store, cart))
    assert got == durable


def test_reading_across_chunk_boundaries(store: CartridgeStore) -> None:
    cart = store.create("XCH001L8")
    rnd = random.Random(4)
    big = [rnd.randbytes(rnd.randrange(1, 300 * KiB)) for _ in range(40)]
    write_all(cart, big)
    chunks = cart.status()["partitions"][0]["chunks"]
    assert read_all(cart) == big  # part of it is still in the chunker's window
    cart.flush()
    assert cart.status()["partitions"][0]["chunks"] > chunks > 10
    assert read_all(reopen(store, cart)) == big


def test_random_locate_reads_any_record(store: CartridgeStore) -> None:
    cart = store.create("LOC001L8")
    objs = records(300, seed=5)
    write_all(cart, objs)
    cart.flush()
    fms = [sum(1 for o in objs[:i] if o is None) for i in range(len(objs) + 1)]
    for i in random.Random(6).sample(range(len(objs)), 80):
        cart.locate(0, i)
        assert cart.position().file_id == fms[i]
        assert cart.read() == objs[i]


@pytest.mark.parametrize("committed", [True, False])
def test_truncation_in_the_middle_of_a_chunk(store: CartridgeStore, committed: bool) -> None:
    cart = store.create("TRU001L8")
    rnd = random.Random(7)
    objs = [rnd.randbytes(7 * KiB + i) for i in range(60)]  # many records per 16 KiB chunk
    write_all(cart, objs)
    if committed:
        cart.flush()
    cart.locate(0, 33)
    cart.write(b"replacement")
    tail = [rnd.randbytes(9 * KiB) for _ in range(20)]
    write_all(cart, tail)
    want = objs[:33] + [b"replacement"] + tail
    assert read_all(cart) == want
    # A crash before the next durability point: the cut is durable when committed
    # objects were cut (the committed prefix survives), else the old state does.
    after_crash = read_all(reopen(store, cart))
    assert after_crash == (objs[:33] if committed else [])
    cart.flush()
    assert read_all(reopen(store, cart)) == want


def test_truncation_then_crash_after_partial_rewrite(store: CartridgeStore) -> None:
    cart = store.create("TRU002L8")
    rnd = random.Random(8)
    objs = [rnd.randbytes(5 * KiB) for _ in range(80)]
    write_all(cart, objs)
    cart.write_filemarks(1)
    cart.locate(0, 41)
    for _ in range(30):  # enough to overwrite the re-chunked chunk-map entries
        cart.write(rnd.randbytes(6 * KiB))
    # What the page cache holds when the process dies: every entry spilled, none synced.
    cart._parts[0].stream.drain(everything=True)
    cart._parts[0].stream.cmap.spill()
    cart._parts[0].idx.spill()
    assert read_all(reopen(store, cart)) == objs[:41]


def test_write_filemarks_is_fsynced_before_it_returns(
    store: CartridgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cart = store.create("SYN001L8")
    cart.write(b"x" * 1000)
    calls: list[str] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append("sync"), real(fd))[1])
    cart.write_filemarks(1)
    assert calls  # index and chunk map synced (the manifest by atomic_write)
    assert read_all(reopen(store, cart)) == [b"x" * 1000, None]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_stays_bounded_over_200_mb(tmp_path: Path) -> None:
    store = make_store(tmp_path, chunker=None)  # production chunk sizes
    cart = store.create("MEM001L8")
    block = random.Random(9).randbytes(16 << 20)
    record = 256 * KiB
    total = 200 * MB

    def write(upto: int, done: int) -> int:
        while done < upto:
            at = done % len(block)
            piece = block[at : at + record]
            cart.write(piece)
            done += len(piece)
        return done

    done = write(40 * MB, 0)
    cart.write_filemarks(0)
    gc.collect()
    rss, objects = _rss(), len(gc.get_objects())
    done = write(total, done)
    cart.write_filemarks(1)
    gc.collect()
    assert len(gc.get_objects()) - objects < 500  # nothing per record stays in RAM
    assert _rss() - rss < 48 << 20
    assert cart.position().object_id > 700
    cart.locate(0, 500)
    at = (500 * record) % len(block)
    assert cart.read() == block[at : at + record]
    store.shutdown(replicate=False)


class FlakyPool:
    """Fails `fail` puts with backpressure, then behaves."""

    def __init__(self, inner: object, fail: int) -> None:
        self.inner = inner
        self.fail = fail

    def put(self, data: bytes) -> object:
        if self.fail:
            self.fail -= 1
            raise BackpressureTimeout(len(data), 0.0)
        return self.inner.put(data)  # type: ignore[attr-defined]

    def submit(self, data: bytes) -> Future[object]:
        """Like the pool's: the failure waits in the future."""
        fut: Future[object] = Future()
        try:
            fut.set_result(self.put(data))
        except Exception as e:
            fut.set_exception(e)
        return fut

    def get(self, cid: bytes) -> bytes:
        return self.inner.get(cid)  # type: ignore[attr-defined]


def test_a_failed_put_rejects_the_next_command_and_loses_nothing(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    flaky = FlakyPool(store.pool, fail=0)
    path = tmp_path / "direct"
    path.mkdir()
    manifest = Manifest("FLK001L8", 10 * MB, 10 * MB, [PartitionState(10 * MB)], SMALL_CHUNKS)
    cart = Cartridge.create(path, manifest, flaky)  # type: ignore[arg-type]
    rnd = random.Random(10)
    objs = [rnd.randbytes(40 * KiB) for _ in range(10)]
    for r in objs[:5]:
        cart.write(r)
    flaky.fail = 10**6  # the pool is full from now on
    with pytest.raises(Backpressure):
        for r in objs[5:]:
            cart.write(r)  # accepted until a failed put is found (and its retry fails)
    accepted = cart.position().object_id
    assert 5 < accepted < 10
    flaky.fail = 0
    for r in objs[accepted:]:
        cart.write(r)  # the retry now succeeds
    cart.write_filemarks(1)
    assert read_all(Cartridge(path, store.pool)) == [*objs, None]
    store.shutdown(replicate=False)

"""Device discovery and the threaded serve loop, over the fake kernel."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.scsi.engine import CHECK_CONDITION, GOOD, Response
from handlers.tcmu.device import (
    DeviceBusy,
    DeviceGone,
    DeviceNotFound,
    FdDoorbell,
    TcmuDevice,
    UioDevice,
    find_tcmu_device,
    list_tcmu_devices,
    parse_uio_name,
)
from handlers.tcmu.fake_kernel import Completion, FakeKernel, RingFull

TUR = bytes(6)


class StubEngine:
    """READ(6) answers `n` bytes of cdb[5]; opcode 0xEE blocks until `release` is set."""

    def __init__(self) -> None:
        self.count = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def wants_data_out(self, cdb: bytes) -> bool:
        return cdb[0] == 0x0A

    def execute(self, cdb: bytes, data_out: memoryview | None) -> Response:
        self.count += 1
        if cdb[0] == 0xEE:
            self.started.set()
            assert self.release.wait(10)
        if cdb[0] == 0xBB:
            raise RuntimeError("engine bug")
        if cdb[0] == 0x08:
            return Response(data=bytes([cdb[5]]) * int.from_bytes(cdb[2:5], "big"))
        return Response()


@pytest.fixture
def fake() -> Iterator[FakeKernel]:
    kernel = FakeKernel(cmdr_size=16384 - 128, data_blocks=64, block_size=1024)
    yield kernel
    kernel.close()


def attach(fake: FakeKernel, engine: StubEngine) -> TcmuDevice:
    return TcmuDevice(fake.map, FdDoorbell(fake.handler_fd), engine, name="fake", rescan=0.2)


def collect(fake: FakeKernel, want: int, timeout: float = 10.0) -> dict[int, Completion]:
    """Reap completions as the kernel does: after each handler notification."""
    done: dict[int, Completion] = {}
    deadline = time.monotonic() + timeout
    while len(done) < want:
        assert time.monotonic() < deadline, f"only {len(done)} of {want} completed"
        if fake.wait_notified(0.5):
            done.update(fake.completions())
    return done


# -- discovery -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("tcm-user/1/tape0/thur/tape0\n", (1, "tape0", "thur/tape0")),
        ("tcm-user/12/disk/cfg", (12, "disk", "cfg")),
        ("tcm-user/3/changer0", (3, "changer0", "")),
        ("uio_pdrv_genirq", None),
        ("tcm-user/x/dev/cfg", None),
    ],
)
def test_parse_uio_name(name: str, parsed: tuple[int, str, str] | None) -> None:
    assert parse_uio_name(name) == parsed


def make_uio(root: Path, index: int, name: str, size: int) -> None:
    d = root / f"uio{index}"
    (d / "maps" / "map0").mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "maps" / "map0" / "size").write_text(f"{size:#x}\n")


def test_discovery_reads_sysfs(tmp_path: Path) -> None:
    make_uio(tmp_path, 0, "some_other_uio", 4096)
    make_uio(tmp_path, 1, "tcm-user/1/tape0/thur/tape0", 0x1800000)
    make_uio(tmp_path, 2, "tcm-user/1/changer0/thur/changer0", 0x900000)
    (tmp_path / "uio3").mkdir()  # half-created device: skipped
    assert list_tcmu_devices(tmp_path) == [
        UioDevice("uio1", 1, "tape0", "thur/tape0", 0x1800000),
        UioDevice("uio2", 1, "changer0", "thur/changer0", 0x900000),
    ]
    assert find_tcmu_device(1, "changer0", tmp_path).uio == "uio2"
    with pytest.raises(DeviceNotFound):
        find_tcmu_device(2, "changer0", tmp_path)


def test_open_maps_exactly_the_advertised_size(tmp_path: Path, fake: FakeKernel) -> None:
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    make_uio(sysfs, 7, "tcm-user/1/tape0/cfg", fake.size)
    (dev / "uio7").write_bytes(bytes(fake.map))  # a regular file stands in for /dev/uio7
    device = TcmuDevice.open(1, "tape0", StubEngine(), uio_class=sysfs, dev_dir=dev)
    assert (device.ring.cmdr_off, device.ring.cmdr_size) == (128, fake.cmdr_size)
    assert device.ring.size == fake.size
    assert device.name == "user_1/tape0"
    device.close()
    device.close()


def test_open_reports_a_busy_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_uio(tmp_path, 0, "tcm-user/1/tape0/cfg", 1 << 20)

    def busy(*args: object, **kw: object) -> int:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(os, "open", busy)
    with pytest.raises(DeviceBusy):
        TcmuDevice.open(1, "tape0", StubEngine(), uio_class=tmp_path, dev_dir=tmp_path)


# -- the doorbell ----------------------------------------------------------------------


def test_doorbell_wait_kick_interrupt_and_notify(fake: FakeKernel) -> None:
    bell = FdDoorbell(fake.handler_fd)
    assert bell.wait(0.01) is False
    fake.kick()
    assert bell.wait(1) is True
    bell.interrupt()
    assert bell.wait(1) is False  # woken, but not by the kernel
    bell.notify()
    assert fake.wait_notified(1)
    bell.close()


# -- the serve thread ------------------------------------------------------------------


def test_threaded_loop_serves_1000_commands_and_stops_cleanly(fake: FakeKernel) -> None:
    engine = StubEngine()
    device = attach(fake, engine)
    device.start()
    want: dict[int, bytes] = {}
    for i in range(1000):
        n = (i * 37) % 3000
        while True:
            try:
                cmd_id = fake.submit(
                    bytes([0x08, 0, 0, n >> 8, n & 0xFF, i & 0xFF]),
                    data_in_len=n,
                    iov_split=1 + i % 3,
                )
                break
            except RingFull:  # qfull: wait for the handler to complete something
                if fake.wait_notified(1):
                    for k, c in fake.completions().items():
                        assert c.status == GOOD and c.data_in == want.pop(k)
        want[cmd_id] = bytes([i & 0xFF]) * n
        fake.kick()
    final = collect(fake, len(want))
    for k, c in final.items():
        assert c.status == GOOD and c.data_in == want.pop(k)
    assert not want
    assert engine.count == 1000
    assert device.stop(5)
    assert not device.running and device.error is None
    device.close()


def test_start_serves_what_is_already_queued_without_a_kick(fake: FakeKernel) -> None:
    """Reattach: entries queued before the handler attached are served at once."""
    ids = [fake.submit(TUR) for _ in range(5)]
    device = attach(fake, StubEngine())
    device.start()
    assert sorted(collect(fake, 5)) == ids
    device.close(5)


def test_stop_finishes_the_command_in_flight_and_leaves_the_rest(fake: FakeKernel) -> None:
    engine = StubEngine()
    engine.release.clear()
    slow = fake.submit(bytes([0xEE]) + bytes(9))
    rest = [fake.submit(TUR) for _ in range(3)]
    device = attach(fake, engine)
    device.start()
    assert engine.started.wait(5)
    stopper = threading.Thread(target=device.stop, args=(10,))
    stopper.start()
    time.sleep(0.05)
    assert device.running  # stop waits for the in-flight command
    engine.release.set()
    stopper.join(10)
    assert not device.running
    assert list(collect(fake, 1)) == [slow]  # completed and notified before exiting
    assert fake.inflight == 3
    device.close()
    # The next handler picks the rest up from cmd_tail.
    again = attach(fake, engine)
    again.start()
    assert sorted(collect(fake, 3)) == rest
    again.close(5)


def test_stop_with_drain_serves_everything_queued(fake: FakeKernel) -> None:
    engine = StubEngine()
    engine.release.clear()
    fake.submit(bytes([0xEE]) + bytes(9))
    for _ in range(10):
        fake.submit(TUR)
    device = attach(fake, engine)
    device.start()
    assert engine.started.wait(5)
    threading.Timer(0.05, engine.release.set).start()
    assert device.stop(10, drain=True)
    assert len(collect(fake, 11)) == 11
    device.close()


def test_engine_exception_does_not_kill_the_thread(fake: FakeKernel) -> None:
    device = attach(fake, StubEngine())
    device.start()
    bad = fake.submit(bytes([0xBB]) + bytes(9))
    fake.kick()
    assert collect(fake, 1)[bad].status == CHECK_CONDITION
    good = fake.submit(TUR)
    fake.kick()
    assert collect(fake, 1)[good].status == GOOD
    assert device.running
    device.close(5)


def test_device_gone_ends_the_loop_with_an_error() -> None:
    fake = FakeKernel(cmdr_size=4096 - 128, data_blocks=4, block_size=512)
    fd = os.dup(fake.handler_fd)
    device = TcmuDevice(fake.map, FdDoorbell(fd, owns_fd=True), StubEngine(), rescan=0.2)
    device.start()
    fake.unplug()  # the uio device goes away: reads see EOF
    deadline = time.monotonic() + 5
    while device.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not device.running
    assert isinstance(device.error, DeviceGone)
    device.close()
    fake.close()


def test_close_without_start_and_start_after_close(fake: FakeKernel) -> None:
    device = attach(fake, StubEngine())
    device.close()
    with pytest.raises(RuntimeError):
        device.start()

"""TCMU device discovery and the per-device serve thread.

The kernel exposes each user backstore as a uio device whose
``/sys/class/uio/uioN/name`` is ``tcm-user/<hba>/<dev>/<dev_config>`` (``<hba>`` is the
N of ``core/user_N``). We open ``/dev/uioN``, map exactly ``maps/map0/size`` bytes (the
kernel refuses any other size) and serve the ring from one thread per device, so the
commands of one logical unit are serialised by construction.

The uio fd is the doorbell both ways: reading 4 bytes consumes the kernel's "entries
queued" event, writing 4 bytes makes the kernel reap our completions (its irqcontrol
hook). `Doorbell` abstracts that so tests run the same loop over `FakeKernel`'s
socketpair, which has the same 4-byte read/write semantics.

Reattaching after a handler restart (the daemon drives the configfs half through
``configfs/``; paths under ``/sys/kernel/config/target/core/user_<hba>/<dev>/``):

1. ``action/block_dev`` = 1 - the kernel reaps what the old process completed and
   answers new commands BUSY instead of queueing them.
2. ``action/reset_ring`` = 2 for tape and changer (in-flight commands fail with CHECK
   CONDITION, so an initiator does not blindly retry a WRITE and duplicate a record;
   the engine must then report the position as lost), 1 for disks (BUSY, retried).
   The ring is then empty with ``cmd_head == cmd_tail == 0``.
3. ``TcmuDevice.open(hba, dev, engine)`` then ``start()``. The loop first serves
   whatever is already queued, starting from the mailbox's ``cmd_tail``: after a reset
   that is nothing, but if step 2 was skipped (quick restart of a disk handler) the
   pending entries are executed in order. Nothing is kept outside the ring, so
   resuming needs no other state. ``open`` fails with `DeviceBusy` while the old
   process still holds the uio fd (the kernel allows one opener).
4. ``action/block_dev`` = 0.

Only reset the ring while no `TcmuDevice` serves it: a live loop would go on writing
the ``cmd_tail`` it had before the reset.

Shutdown (SIGTERM): ``block_dev`` = 1 so no new commands arrive, then
``stop(drain=True)`` to finish what is queued (or plain ``stop()`` to finish only the
command in flight and leave the rest for the next attach), then ``close()``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from handlers.scsi.engine import LogicalUnit
from handlers.tcmu.ring import CommandListener, Ring, TmrListener

log = logging.getLogger(__name__)

UIO_CLASS = Path("/sys/class/uio")
DEV_DIR = Path("/dev")
_NAME_PREFIX = "tcm-user"


class DeviceNotFound(LookupError):
    """No uio device belongs to the requested backstore."""


class DeviceBusy(OSError):
    """Another process (an old handler) still holds the uio device open."""


class DeviceGone(OSError):
    """The uio device disappeared under us (backstore deleted)."""


@dataclass(frozen=True, slots=True)
class UioDevice:
    """One TCMU backstore as seen in sysfs."""

    uio: str  # "uio3"
    hba: int
    dev: str
    dev_config: str
    map_size: int

    def dev_path(self, dev_dir: Path = DEV_DIR) -> Path:
        return dev_dir / self.uio


def parse_uio_name(name: str) -> tuple[int, str, str] | None:
    """``tcm-user/<hba>/<dev>[/<dev_config>]`` -> (hba, dev, dev_config), else None.

    dev_config may itself contain slashes, so only the first three are separators.
    """
    parts = name.strip().split("/", 3)
    if len(parts) < 3 or parts[0] != _NAME_PREFIX or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2], parts[3] if len(parts) == 4 else ""


def list_tcmu_devices(uio_class: Path = UIO_CLASS) -> list[UioDevice]:
    """Every TCMU uio device present, sorted by uio name."""
    found = []
    for entry in sorted(uio_class.glob("uio*")):
        try:
            parsed = parse_uio_name((entry / "name").read_text())
            if parsed is None:
                continue
            size = int((entry / "maps" / "map0" / "size").read_text().strip(), 16)
        except (OSError, ValueError) as exc:
            log.debug("skipping %s: %s", entry, exc)
            continue
        found.append(UioDevice(entry.name, parsed[0], parsed[1], parsed[2], size))
    return found


def find_tcmu_device(hba: int, dev: str, uio_class: Path = UIO_CLASS) -> UioDevice:
    """The uio device of backstore ``core/user_<hba>/<dev>``."""
    for candidate in list_tcmu_devices(uio_class):
        if candidate.hba == hba and candidate.dev == dev:
            return candidate
    raise DeviceNotFound(f"no uio device for user_{hba}/{dev} under {uio_class}")


class Doorbell(Protocol):
    """How the serve loop waits for the kernel and tells it about completions."""

    def wait(self, timeout: float | None) -> bool:
        """Block until the kernel signals (True), `interrupt` or the timeout (False)."""
        ...

    def notify(self) -> None:
        """Tell the kernel we completed entries (it reaps up to cmd_tail)."""
        ...

    def interrupt(self) -> None:
        """Wake a `wait` in another thread (used by stop)."""
        ...

    def close(self) -> None: ...


class FdDoorbell:
    """uio doorbell semantics over any fd: read 4 bytes to wait, write 4 to notify.

    A private pipe lets `interrupt` wake the poll at once, so stopping never waits for
    a poll timeout. `owns_fd` closes the fd in `close` (the uio fd; not a test's).
    """

    def __init__(self, fd: int, *, owns_fd: bool = False) -> None:
        self._fd = fd
        self._owns_fd = owns_fd
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._poll.register(self._wake_r, select.POLLIN)

    def wait(self, timeout: float | None) -> bool:
        ms = None if timeout is None else max(0, int(timeout * 1000))
        kicked = False
        for fd, events in self._poll.poll(ms):
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                continue
            if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                raise DeviceGone(errno.ENODEV, "uio device error or hang-up")
            if events & select.POLLIN:
                if not os.read(self._fd, 4):
                    raise DeviceGone(errno.ENODEV, "uio device closed")
                kicked = True
        return kicked

    def notify(self) -> None:
        os.write(self._fd, b"\0\0\0\0")

    def interrupt(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"!")

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._owns_fd:
            os.close(self._fd)


class TcmuDevice:
    """Serves one TCMU ring with one engine from its own thread.

    `buf` is the shared map; `release` (if given) is called by `close` after the ring
    has dropped its views (it unmaps in production). `rescan` bounds how long the loop
    sleeps without a doorbell before looking at the ring again: a cheap guard against a
    lost wake-up, e.g. across a ring reset.
    """

    def __init__(
        self,
        buf: Any,
        doorbell: Doorbell,
        engine: LogicalUnit,
        *,
        name: str = "tcmu",
        on_tmr: TmrListener | None = None,
        on_command: CommandListener | None = None,
        release: Callable[[], None] | None = None,
        rescan: float = 5.0,
    ) -> None:
        self.name = name
        self.ring = Ring(buf, engine, name=name, on_tmr=on_tmr, on_command=on_command)
        self.doorbell = doorbell
        self.error: BaseException | None = None
        self._release = release
        self._rescan = rescan
        self._stop = threading.Event()
        self._drain = False
        self._thread: threading.Thread | None = None
        self._closed = False

    @classmethod
    def open(
        cls,
        hba: int,
        dev: str,
        engine: LogicalUnit,
        *,
        uio_class: Path = UIO_CLASS,
        dev_dir: Path = DEV_DIR,
        on_tmr: TmrListener | None = None,
        on_command: CommandListener | None = None,
    ) -> TcmuDevice:
        """Find, open and map the uio device of ``core/user_<hba>/<dev>``."""
        info = find_tcmu_device(hba, dev, uio_class)
        path = info.dev_path(dev_dir)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise DeviceBusy(exc.errno, f"{path} is held by another handler") from exc
            raise
        try:
            shared = mmap.mmap(fd, info.map_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        try:
            return cls(
                shared,
                FdDoorbell(fd, owns_fd=True),
                engine,
                name=f"user_{hba}/{dev}",
                on_tmr=on_tmr,
                on_command=on_command,
                release=shared.close,
            )
        except BaseException:
            shared.close()
            os.close(fd)
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the serve thread; queued entries are served at once (reattach)."""
        if self._closed:
            raise RuntimeError(f"{self.name}: device is closed")
        if self.running:
            return
        self._stop.clear()
        self._drain = False
        self.error = None
        self._thread = threading.Thread(target=self._serve, name=f"tcmu-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None, *, drain: bool = False) -> bool:
        """Stop serving; True once the thread has exited.

        The command being executed finishes and is completed; with `drain` every entry
        already queued is served too. Entries left behind stay in the ring for the next
        attach. The kernel is notified of everything completed before the thread exits.
        """
        thread = self._thread
        if thread is None:
            return True
        self._drain = drain
        self._stop.set()
        self.doorbell.interrupt()
        if thread is threading.current_thread():
            return False  # asked from inside a command: the loop exits after it
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._thread = None
        return True

    def close(self, timeout: float | None = None) -> None:
        """Stop, drop the ring's views, unmap and close the fd. Idempotent."""
        if self._closed:
            return
        if not self.stop(timeout):
            # Unmapping under a running thread would crash the process: refuse.
            raise RuntimeError(f"{self.name}: serve thread did not stop")
        self._closed = True
        self.ring.close()
        if self._release is not None:
            self._release()
        self.doorbell.close()

    def _should_stop(self) -> bool:
        return self._stop.is_set() and not self._drain

    def _serve(self) -> None:
        ring = self.ring
        try:
            while True:
                before = ring.tail
                ring.process(self._should_stop)
                if ring.tail != before:
                    self.doorbell.notify()
                if self._stop.is_set():
                    # With drain, process() ran until cmd_head stopped moving (or hit a
                    # malformed entry, which waiting would not fix): done either way.
                    return
                self.doorbell.wait(self._rescan)
        except BaseException as exc:
            self.error = exc
            log.exception("%s: serve loop died", self.name)

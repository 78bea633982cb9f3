"""The skeleton `CartridgeStore` (thur/tape/store.py) and `VolumeStore`
(thur/volume/store.py) share: items by name under one data dir, each also in
the bucket when the pool is a `TieredPool`, and a background thread that
publishes an item `replicate_delay` seconds after its first unpublished change.

    <root>/<name>/            one directory per item
    <root>/.create-<name>/    an item being created (removed on start)
    <root>/.restore-<name>/   one being restored from the bucket (removed on start)
    <root>/.trash-<name>-*/   one being deleted (removed on start)

The subclass owns what an item is and what "dirty" records for it: `_dirty`
maps a name to a value `_dirty_since` turns into the time of its first
unpublished change, and `replicate(name)` publishes one item.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from thur.fsutil import fsync_dir
from thur.replica import SegmentReplicator

ItemT = TypeVar("ItemT")
DirtyT = TypeVar("DirtyT")


class ReplicatedStore(Generic[ItemT, DirtyT]):
    kind: ClassVar[str]  # "cartridge", "volume": in log messages
    thread_name: ClassVar[str]
    manifest_file: ClassVar[str]  # its presence makes a directory an item
    unknown: ClassVar[type[Exception]]  # raised for a name neither here nor in the bucket
    log: ClassVar[logging.Logger]  # the subclass module's logger

    def __init__(
        self,
        root: Path,
        pool: Any,
        replicator: SegmentReplicator | None,
        replicate_delay: float,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.pool = pool
        self.replicate_delay = replicate_delay
        self.replicator: Any = replicator
        self._lock = threading.RLock()
        self._open: dict[str, ItemT] = {}
        self._dirty_lock = threading.Lock()
        self._dirty: dict[str, DirtyT] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for leftover in self.root.glob(".*-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    # ---- items on disk ------------------------------------------------------------

    def _create_dir(self, name: str, fill: Callable[[Path], None]) -> None:
        """`fill` the new item's files beside `<root>/<name>`, then rename it into place."""
        tmp = self.root / f".create-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        fill(tmp)
        os.rename(tmp, self.root / name)
        fsync_dir(self.root)

    def _local_path(self, name: str) -> Path:
        """The item's directory, restored from the bucket first if only the bucket has it."""
        path = self.root / name
        if not (path / self.manifest_file).exists():
            if self.replicator is None or not self.replicator.exists(name):
                raise self.unknown(name)
            self.replicator.restore(name, path)
        return path

    def _remove_local(self, name: str) -> None:
        path = self.root / name
        if path.exists():
            trash = self.root / f".trash-{name}-{uuid.uuid4().hex[:8]}"
            os.rename(path, trash)
            fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)

    def exists(self, name: str) -> bool:
        if (self.root / name / self.manifest_file).exists():
            return True
        return self.replicator is not None and self.replicator.exists(name)

    def list(self) -> list[str]:
        """Names of the items present locally, sorted (`restore_all` for the bucket's)."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if not p.name.startswith(".") and (p / self.manifest_file).exists()
        )

    def restore_all(self) -> list[str]:
        """Restore every item the bucket has and this data dir lacks (fresh machine)."""
        if self.replicator is None:
            return []
        restored = []
        for name in sorted(set(self.replicator.names())):
            if not (self.root / name / self.manifest_file).exists():
                self.replicator.restore(name, self.root / name)
                restored.append(name)
        return restored

    # ---- the background replicator ----------------------------------------------------

    def replicate(self, name: str | None = None) -> int:
        raise NotImplementedError

    def _dirty_since(self, value: DirtyT) -> float:
        raise NotImplementedError

    def _queue_at_start(self, name: str) -> None:
        """Mark a local item whose last change may not be in the bucket."""
        raise NotImplementedError

    def start(self) -> None:
        """Replicate in the background until `shutdown()`. Also queues every local item
        whose last change may not be in the bucket (a restart after a crash)."""
        if self.replicator is None or self._thread is not None:
            return
        for name in self.list():
            self._queue_at_start(name)
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.replicate_delay)
            self._wake.clear()
            now = time.monotonic()
            with self._dirty_lock:
                due = [
                    n
                    for n, v in self._dirty.items()
                    if now - self._dirty_since(v) >= self.replicate_delay
                ]
            for name in due:
                if self._stop.is_set():
                    return
                try:
                    self.replicate(name)
                except Exception as e:
                    self.log.error("replicating %s %s failed: %s", self.kind, name, e)
                    self._stop.wait(self.replicate_delay)

    def _stop_thread(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

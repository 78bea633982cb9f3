"""`CartridgeStore`: the cartridges of a library, by barcode, under one data dir.

    <root>/<barcode>/            one directory per cartridge (cartridge.py)
    <root>/.create-<barcode>/    a cartridge being created (removed on start)
    <root>/.restore-<barcode>/   one being restored from the bucket (removed on start)
    <root>/.trash-<barcode>-*/   one being deleted (removed on start)

The store owns the put workers shared by every open cartridge (chunks of two
drives compress and fsync in parallel) and, when the pool is a `TieredPool`,
a background replicator that publishes committed cartridges to the bucket
`replicate_delay` seconds after their last commit (replica.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from thur.cloud import TieredPool
from thur.pool import ChunkerParams
from thur.replicated_store import ReplicatedStore
from thur.tape.cartridge import MANIFEST, Cartridge
from thur.tape.index import chunk_ids_from_file
from thur.tape.manifest import (
    InvalidBarcode,
    Manifest,
    PartitionState,
    load_manifest,
    parse_barcode,
)
from thur.tape.medium import LTO8_NATIVE_CAPACITY
from thur.tape.replica import Replicator
from thur.tape.stream import ChunkPool

log = logging.getLogger(__name__)


class CartridgeStoreError(Exception):
    """Base of the store's own errors (the cartridges raise `TapeError`s)."""


class CartridgeExists(CartridgeStoreError):
    """`create()` of a barcode that already exists (locally or in the bucket)."""


class UnknownCartridge(CartridgeStoreError, KeyError):
    """No cartridge with this barcode, locally or in the bucket."""


class CartridgeStore(ReplicatedStore[Cartridge, float]):
    """Creates, opens, lists and deletes cartridges; replicates them to the bucket.

    Thread-safe. One open `Cartridge` per barcode: `open()` returns the same object
    until `close(barcode)`.
    """

    kind = "cartridge"
    thread_name = "thur-tape-replica"
    manifest_file = MANIFEST
    unknown = UnknownCartridge
    log = log

    def __init__(
        self,
        root: Path,
        pool: ChunkPool,
        *,
        chunker: ChunkerParams | None = None,
        max_inflight: int = 32,
        replicate_delay: float = 5.0,
    ) -> None:
        replicator = Replicator(pool) if isinstance(pool, TieredPool) else None
        super().__init__(root, pool, replicator, replicate_delay)
        self.replicator: Replicator | None
        self.chunker = chunker or ChunkerParams()
        self.max_inflight = max_inflight
        # `_dirty`: barcode -> time of its first unpublished commit: a cartridge
        # committing all the time is still published every `replicate_delay` seconds.

    # ---- cartridges ----------------------------------------------------------------

    def create(
        self, barcode: str, *, worm: bool = False, capacity: int = LTO8_NATIVE_CAPACITY
    ) -> Cartridge:
        label = parse_barcode(barcode)
        if label.worm_media and not worm:
            raise InvalidBarcode(f"barcode {barcode!r}: media id {label.media_id} is WORM media")
        if capacity <= 0:
            raise ValueError(f"capacity {capacity} must be positive")
        with self._lock:
            if self.exists(barcode):
                raise CartridgeExists(f"cartridge {barcode} already exists")
            manifest = Manifest(
                barcode=barcode,
                full_capacity=capacity,
                native_capacity=capacity,
                partitions=[PartitionState(capacity=capacity)],
                chunker=self.chunker,
                worm=worm,
                cleaning=label.cleaning,
            )
            self._create_dir(
                barcode, lambda tmp: Cartridge.create(tmp, manifest, self.pool).close()
            )
            self._mark_dirty(barcode)
            return self.open(barcode)

    def open(self, barcode: str) -> Cartridge:
        """The open cartridge (restored from the bucket first if only the bucket has it)."""
        with self._lock:
            cart = self._open.get(barcode)
            if cart is not None:
                return cart
            cart = Cartridge(
                self._local_path(barcode),
                self.pool,
                max_inflight=self.max_inflight,
                on_commit=lambda c: self._mark_dirty(c.barcode),
            )
            self._open[barcode] = cart
            return cart

    def close(self, barcode: str) -> None:
        """Durability point and release (the drive unloaded it for good)."""
        with self._lock:
            cart = self._open.pop(barcode, None)
        if cart is not None:
            cart.close()

    def release(self, barcode: str) -> None:
        """The library is done with what `open()` returned (thur.library's CartridgeSource)."""
        self.close(barcode)

    def local_only_bytes(self, barcode: str) -> int:
        """Record bytes of this cartridge a restore from the bucket would not bring back."""
        return self.open(barcode).local_only_bytes()

    def delete(self, barcode: str) -> None:
        """Remove a cartridge here and in the bucket (its chunks become garbage for GC)."""
        with self._lock:
            if not self.exists(barcode):
                raise UnknownCartridge(barcode)
            cart = self._open.pop(barcode, None)
            if cart is not None:
                cart.close()
            with self._dirty_lock:
                self._dirty.pop(barcode, None)
            if self.replicator is not None:
                self.replicator.delete(barcode)
            self._remove_local(barcode)

    def info(self, barcode: str) -> dict[str, Any]:
        """Status of one cartridge (`thurvtl cartridge info`), open or not."""
        cart = self.open(barcode)
        out = cart.status()
        out["replication_pending"] = (
            self.replicator.pending(cart) if self.replicator is not None else False
        )
        return out

    # ---- GC owners -------------------------------------------------------------------

    def owners(self) -> list[_Owner]:
        """One `thur.pool.ChunkOwner` per cartridge, for `GarbageCollector(owners=…)`."""
        return [_Owner(self, b) for b in self.list()]

    # ---- replication -------------------------------------------------------------------

    def _mark_dirty(self, barcode: str) -> None:
        with self._dirty_lock:
            self._dirty.setdefault(barcode, time.monotonic())
        self._wake.set()

    def _dirty_since(self, value: float) -> float:
        return value

    def _queue_at_start(self, name: str) -> None:
        self._mark_dirty(name)

    def replicate(self, barcode: str | None = None) -> int:
        """Publish now (one cartridge or every one with unpublished commits); returns
        how many were published. Raises the first failure."""
        if self.replicator is None:
            return 0
        with self._dirty_lock:
            todo = [barcode] if barcode is not None else list(self._dirty)
        done = 0
        for bc in todo:
            with self._dirty_lock:
                self._dirty.pop(bc, None)
            try:
                with self._lock:
                    cart = self._open.get(bc)
                if cart is None:
                    cart = self.open(bc)
                done += self.replicator.replicate(cart)
            except BaseException:
                self._mark_dirty(bc)
                raise
        return done

    def shutdown(self, *, replicate: bool = True) -> None:
        """Close every cartridge (durability point), publish, stop the threads."""
        self._stop_thread()
        with self._lock:
            carts = list(self._open.values())
            self._open.clear()
        for cart in carts:
            cart.close()
        if replicate and self.replicator is not None:
            try:
                self.replicate()
            except Exception as e:
                log.error("final replication failed (retried at next start): %s", e)


class _Owner:
    """A cartridge as a GC owner; reads its files even when it is not open."""

    def __init__(self, store: CartridgeStore, barcode: str) -> None:
        self.store = store
        self.barcode = barcode

    @property
    def name(self) -> str:
        return f"tape:{self.barcode}"

    def chunk_ids(self) -> Iterator[bytes]:
        with self.store._lock:
            cart = self.store._open.get(self.barcode)
        path = self.store.root / self.barcode
        if cart is not None:
            yield from cart.chunk_ids()
            dirty = cart.dirty_chunks()
        else:
            m = load_manifest(path / MANIFEST)
            for n, p in enumerate(m.partitions):
                yield from chunk_ids_from_file(path / f"p{n}.chunks", p.chunks)
            dirty = [p.dirty_chunks for p in m.partitions]
        if self.store.replicator is not None:
            yield from self.store.replicator.stale_ids(path, dirty)

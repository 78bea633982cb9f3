"""Where thurvtld keeps cartridges: the chunk pool, its backend, the cartridge store.

With no cloud configured the backend is a directory under data_dir (the
default needs no cloud); the layout is the same as in a bucket, so moving to
S3/GCS/Azure later is a matter of configuration.
"""

from __future__ import annotations

import logging
from pathlib import Path

from thur.cloud import check
from thur.library import CartridgeExists, CartridgeNotFound
from thur.library.barcode import BarcodeError
from thur.storage_config import BackendConfig, PoolSettings, StorageUnavailable, build_tier
from thur.tape import Medium
from thur.tape.manifest import InvalidBarcode
from thur.tape.store import CartridgeExists as StoreCartridgeExists
from thur.tape.store import CartridgeStore, UnknownCartridge

log = logging.getLogger(__name__)


class VtlStorage:
    """The storage object graph of one daemon, started and stopped as a unit."""

    def __init__(
        self,
        data_dir: Path,
        backend: BackendConfig | None = None,
        pool: PoolSettings | None = None,
    ) -> None:
        self.backend, self.tier = build_tier(data_dir, backend, pool)
        self.cartridges = CartridgeStore(data_dir / "tapes", self.tier)
        self.source = StoreCartridgeSource(self.cartridges)

    def start(self) -> None:
        """Before the library opens: backend checked (credentials, bucket, write/read/delete),
        index synced, cartridges only the bucket has restored."""
        report = check(self.backend)
        if not report.ok:
            raise StorageUnavailable(str(report))
        self.tier.sync_index()
        self.tier.start()
        restored = self.cartridges.restore_all()
        if restored:
            log.info("restored %d cartridges from the backend: %s", len(restored), restored)
        self.cartridges.start()

    def shutdown(self) -> None:
        """Close every cartridge (a durability point), publish metadata, stop uploads."""
        self.cartridges.shutdown()
        self.tier.close()


class StoreCartridgeSource:
    """The library's `CartridgeSource` over the pool-backed `CartridgeStore`.

    Translates the store's errors into the library's, so the CLI and the
    changer report them as refusals rather than internal errors.
    """

    def __init__(self, store: CartridgeStore) -> None:
        self.store = store

    def create(self, barcode: str, *, worm: bool = False) -> None:
        try:
            self.store.create(barcode, worm=worm)
        except StoreCartridgeExists as exc:
            raise CartridgeExists(str(exc)) from None
        except InvalidBarcode as exc:
            raise BarcodeError(str(exc)) from None

    def open(self, barcode: str) -> Medium:
        try:
            return self.store.open(barcode)
        except UnknownCartridge:
            raise CartridgeNotFound(f"cartridge {barcode} does not exist") from None

    def release(self, barcode: str) -> None:
        self.store.close(barcode)

    def exists(self, barcode: str) -> bool:
        return self.store.exists(barcode)

    def list(self) -> list[str]:
        return self.store.list()

    def delete(self, barcode: str) -> None:
        try:
            self.store.delete(barcode)
        except UnknownCartridge:
            raise CartridgeNotFound(f"cartridge {barcode} does not exist") from None

    def local_only_bytes(self, barcode: str) -> int | None:
        try:
            return self.store.local_only_bytes(barcode)
        except UnknownCartridge:
            return None

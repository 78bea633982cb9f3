"""The one small interface every object store implements.

Keys are '/'-separated relative names (`packs/ab/<hex>`, `index/<hex>`);
backends map them onto their own namespace (a directory, a bucket + prefix, a
container + prefix). Every method raises only the errors in `errors.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


class Backend(Protocol):
    """An object store.

    `conditional_create` says whether `put(..., if_absent=True)` is atomic on
    this service; when False, `if_absent` is a best-effort head-then-put.
    """

    name: str
    conditional_create: bool

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Store `data` under `key`. With `if_absent`, raise AlreadyExists if present."""
        ...

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """Read `length` bytes from `start` (to the end when None). NotFound if absent."""
        ...

    def head(self, key: str) -> ObjectInfo:
        """Size of an object. NotFound if absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object; deleting an absent object is not an error."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, in no promised order."""
        ...


def check_key(key: str) -> str:
    """Reject keys that could escape a backend's namespace."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key

"""The volume manifest (`volume.json`) and volume names.

The manifest holds what a volume *is* (geometry, identity, flags); the page
table (table.py) holds its contents. It is small and rarely written (create,
resize, flag changes), so it is JSON, replaced atomically
(`thur.fsutil.atomic_write_json`). Field by field: docs/FORMATS.md ("Volumes").
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from thur.fsutil import atomic_write_json
from thur.volume.table import ENTRY_SIZE

FORMAT = "thur-volume"
VERSION = 1
TABLE_VERSION = 1  # of the page-table entry layout (table.py)
KiB = 1024
BLOCK_SIZES = (512, 4096)
DEFAULT_PAGE_SIZE = 64 * KiB
MAX_PAGE_SIZE = 1024 * KiB
# 256 TiB: the sparse page table of 64 KiB pages then stays under 256 GiB,
# far inside ext4's and xfs's file size limits.
MAX_BYTES = 1 << 48

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class ManifestError(ValueError):
    """A manifest this code cannot read (wrong format, newer version, bad field)."""


class InvalidVolumeName(ValueError):
    """A volume name that is not allowed (it names directories and bucket keys)."""


def check_name(name: str) -> str:
    """1-63 of letters, digits, `_ . -`, starting with a letter or digit.

    The name is a directory, a bucket key component and part of a configfs
    backstore name, so no slash, no space, and no leading dot (the store's
    temporary directories start with one).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidVolumeName(
            f"volume name {name!r}: use 1 to 63 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def mint_serial() -> str:
    """32 lowercase hex digits, random: unique across machines sharing a bucket,
    and usable as-is in a VPD 83h NAA or EUI descriptor."""
    return uuid.uuid4().hex


def check_geometry(block_size: int, page_size: int, num_blocks: int) -> None:
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block size {block_size}: use one of {BLOCK_SIZES}")
    if not (block_size <= page_size <= MAX_PAGE_SIZE) or page_size & (page_size - 1):
        raise ValueError(
            f"page size {page_size}: a power of two from the block size to {MAX_PAGE_SIZE}"
        )
    if num_blocks <= 0 or num_blocks * block_size > MAX_BYTES:
        raise ValueError(f"size of {num_blocks} blocks: from 1 block to {MAX_BYTES} bytes")


@dataclass(slots=True)
class VolumeManifest:
    name: str
    num_blocks: int
    serial: str = field(default_factory=mint_serial)
    block_size: int = 4096
    page_size: int = DEFAULT_PAGE_SIZE
    lun: int | None = None  # the export's LUN, stable for the volume's life
    write_protected: bool = False
    fence_waits_for_upload: bool = False
    created: float = field(default_factory=time.time)
    generation: int = 0  # +1 per manifest change

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.update(
            format=FORMAT, version=VERSION, table_version=TABLE_VERSION, entry_size=ENTRY_SIZE
        )
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> VolumeManifest:
        if doc.get("format") != FORMAT:
            raise ManifestError(f"not a volume manifest (format {doc.get('format')!r})")
        if doc.get("version") != VERSION or doc.get("table_version") != TABLE_VERSION:
            raise ManifestError(
                f"volume manifest version {doc.get('version')}/{doc.get('table_version')} "
                f"is not {VERSION}/{TABLE_VERSION}"
            )
        try:
            m = cls(
                name=check_name(doc["name"]),
                num_blocks=int(doc["num_blocks"]),
                serial=str(doc["serial"]),
                block_size=int(doc["block_size"]),
                page_size=int(doc["page_size"]),
                lun=None if doc.get("lun") is None else int(doc["lun"]),
                write_protected=bool(doc["write_protected"]),
                fence_waits_for_upload=bool(doc["fence_waits_for_upload"]),
                created=float(doc["created"]),
                generation=int(doc["generation"]),
            )
            check_geometry(m.block_size, m.page_size, m.num_blocks)
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"bad volume manifest: {e}") from e
        return m

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_json())


def load_manifest(path: Path) -> VolumeManifest:
    try:
        doc = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise ManifestError(f"{path}: {e}") from e
    return VolumeManifest.from_json(doc)

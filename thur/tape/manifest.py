"""The cartridge manifest (`manifest.json`) and barcode rules.

The manifest is the commit record of a cartridge: it is replaced atomically
(`thur.fsutil.atomic_write_json`) at every durability point, *after* the
record index and chunk map it counts are fsync'd, so whatever it says is on
disk. JSON because it is small, rarely written and read by people
(`thurvtl cartridge info`); the per-record data is in the binary index files.
The layout is documented field by field in docs/FORMATS.md ("Cartridges").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thur.pool import ChunkerParams
from thur.tape.medium import LTO8_DENSITY

FORMAT = "thur-cartridge"
VERSION = 1
INDEX_VERSION = 1  # of the record index and chunk map entry layouts (index.py)


class ManifestError(ValueError):
    """A manifest this code cannot read (wrong format, newer version, bad field)."""


class InvalidBarcode(ValueError):
    """A barcode that is not a valid LTO label for this library."""


_BARCODE = re.compile(r"[A-Z0-9]{6,8}")
# Media ids an LTO-8 drive can load (LTO-7 and -8 data and WORM, LTO-7 type M)
# plus the universal cleaning id.
DATA_MEDIA = {"L7", "L8", "M8"}
WORM_MEDIA = {"LV", "LW"}
CLEANING_MEDIA = {"CU"}


@dataclass(frozen=True, slots=True)
class Barcode:
    label: str
    media_id: str | None  # the 2-character suffix of an 8-character label
    cleaning: bool
    worm_media: bool


def parse_barcode(label: str) -> Barcode:
    """Validate an LTO barcode: 6-8 upper-case letters/digits, e.g. `ABC123L8`.

    An 8-character label ends in a media id (`L8`, `L7`, `M8`, WORM `LW`/`LV`,
    cleaning `CU`); a `CLN` prefix marks a cleaning cartridge.
    """
    if not isinstance(label, str) or not _BARCODE.fullmatch(label):
        raise InvalidBarcode(
            f"barcode {label!r}: use 6 to 8 upper-case letters and digits, e.g. ABC123L8"
        )
    cleaning = label.startswith("CLN")
    media = label[6:] if len(label) == 8 else None
    if media is not None:
        allowed = DATA_MEDIA | WORM_MEDIA | CLEANING_MEDIA
        if cleaning:
            allowed = allowed | {f"L{d}" for d in range(1, 10)}
        if media not in allowed:
            raise InvalidBarcode(
                f"barcode {label!r}: media id {media!r} is not one an LTO-8 drive loads "
                f"(use one of {', '.join(sorted(allowed))})"
            )
        if media in CLEANING_MEDIA and not cleaning:
            raise InvalidBarcode(f"barcode {label!r}: media id CU needs a CLN prefix")
    return Barcode(label, media, cleaning, media in WORM_MEDIA)


@dataclass(slots=True)
class PartitionState:
    """One partition as committed: counts of the index files it points at."""

    capacity: int
    objects: int = 0  # record index entries
    filemarks: int = 0
    stream: int = 0  # record bytes = stream length
    chunks: int = 0  # chunk map entries
    # Replication: first index / chunk-map entry changed since the bucket copy.
    dirty_objects: int = 0
    dirty_chunks: int = 0
    # Stream offset up to which the bucket copy equals this one.
    replicated_stream: int = 0


@dataclass(slots=True)
class Manifest:
    barcode: str
    full_capacity: int  # as created; SET CAPACITY proportions refer to it
    native_capacity: int  # after SET CAPACITY; the sum of the partitions
    partitions: list[PartitionState]
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    worm: bool = False
    cleaning: bool = False
    write_protected: bool = False
    density_code: int = LTO8_DENSITY
    generation: int = 0  # +1 per commit
    load_count: int = 0
    host_attributes: dict[int, bytes] = field(default_factory=dict)
    created: float = 0.0  # unix time

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "index_version": INDEX_VERSION,
            "barcode": self.barcode,
            "full_capacity": self.full_capacity,
            "native_capacity": self.native_capacity,
            "worm": self.worm,
            "cleaning": self.cleaning,
            "write_protected": self.write_protected,
            "density_code": self.density_code,
            "generation": self.generation,
            "load_count": self.load_count,
            "created": self.created,
            "chunker": {
                "min_size": self.chunker.min_size,
                "avg_size": self.chunker.avg_size,
                "max_size": self.chunker.max_size,
                "normalized_chunking": self.chunker.normalized_chunking,
            },
            "host_attributes": {
                f"{k:04x}": v.hex() for k, v in sorted(self.host_attributes.items())
            },
            "partitions": [
                {
                    "capacity": p.capacity,
                    "objects": p.objects,
                    "filemarks": p.filemarks,
                    "stream": p.stream,
                    "chunks": p.chunks,
                    "dirty_objects": p.dirty_objects,
                    "dirty_chunks": p.dirty_chunks,
                    "replicated_stream": p.replicated_stream,
                }
                for p in self.partitions
            ],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        if d.get("format") != FORMAT:
            raise ManifestError(f"not a cartridge manifest (format {d.get('format')!r})")
        if d.get("version") != VERSION or d.get("index_version") != INDEX_VERSION:
            raise ManifestError(
                f"manifest version {d.get('version')}/{d.get('index_version')} is not "
                f"{VERSION}/{INDEX_VERSION}"
            )
        try:
            parts = [PartitionState(**p) for p in d["partitions"]]
            return cls(
                barcode=d["barcode"],
                full_capacity=int(d["full_capacity"]),
                native_capacity=int(d["native_capacity"]),
                partitions=parts,
                chunker=ChunkerParams(**d["chunker"]),
                worm=bool(d["worm"]),
                cleaning=bool(d["cleaning"]),
                write_protected=bool(d["write_protected"]),
                density_code=int(d["density_code"]),
                generation=int(d["generation"]),
                load_count=int(d["load_count"]),
                host_attributes={
                    int(k, 16): bytes.fromhex(v) for k, v in d["host_attributes"].items()
                },
                created=float(d.get("created", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"bad manifest field: {e}") from e


def load_manifest(path: Path) -> Manifest:
    try:
        return Manifest.from_json(json.loads(Path(path).read_bytes()))
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not JSON: {e}") from e

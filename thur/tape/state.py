"""The on-disk state of a pool-backed cartridge: files, commits, truncation, replication marks.

`Cartridge` (cartridge.py) adds the `Medium` semantics on top of `CartridgeState`.

A cartridge is a directory (`CartridgeStore` names it by barcode)::

    manifest.json    the commit record (manifest.py), replaced atomically
    p<n>.index       record index of partition n (index.py)
    p<n>.chunks      chunk map of partition n (index.py)
    replica.json     what the bucket holds (replica.py; written by the replicator)

Write order of a durability point (`write_filemarks`, `flush`, `unloaded`,
`close`, MAM changes), the invariant crash recovery relies on:

1. the chunker's tail is cut (a forced cut) and every chunk is stored in the
   pool (each `put` is durable when it returns);
2. index and chunk-map entries are written and fdatasync'd;
3. the manifest, counting them, is replaced atomically.

On open, the files are cut back to the manifest's counts, so a crash at any
moment shows exactly the last durability point. Records written after it
live in RAM (chunker window, puts in flight) or in uncommitted entries, and
are lost by a crash, like a drive's buffer. A write that *truncates*
committed objects first commits the shortened state (manifest only) so that
nothing committed is ever overwritten in place, except a chunk-map entry by a
re-chunked chunk with the same prefix (stream.py).

Thread safety: the drive calls one method at a time; the library's status
reads and the replicator/GC threads may call concurrently, so every public
method takes the cartridge's lock (an RLock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

from thur.fsutil import atomic_write_json
from thur.pool import ChunkerParams
from thur.tape.errors import (
    BackendFailure,
    InvalidPartition,
    MediumCorrupt,
    TapeError,
    WriteProtected,
)
from thur.tape.index import ChunkMap, RecordIndex, chunk_ids_from_file
from thur.tape.manifest import Manifest, ManifestError, PartitionState, load_manifest
from thur.tape.medium import MAX_PARTITIONS
from thur.tape.stream import ChunkPool, PartitionStream

MANIFEST = "manifest.json"


@dataclass(slots=True)
class _Part:
    idx: RecordIndex
    stream: PartitionStream
    state: PartitionState  # as committed
    rep_stream: int  # stream prefix equal to the bucket copy


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A committed state handed to the replicator (replica.py)."""

    generation: int
    manifest: dict[str, Any]
    dirty: list[tuple[int, int]]  # per partition: first changed (index, chunk-map) entry
    epoch: int


class CartridgeState:
    """A pool-backed cartridge; implements `thur.tape.Medium` (see medium.py)."""

    def __init__(
        self,
        path: Path,
        pool: ChunkPool,
        *,
        max_inflight: int = 32,
        on_commit: Callable[[CartridgeState], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.pool = pool
        self._max_inflight = max_inflight
        self._on_commit = on_commit
        self._lock = threading.RLock()
        try:
            self._m = load_manifest(self.path / MANIFEST)
        except (OSError, ManifestError) as e:
            raise MediumCorrupt(f"{self.path}: {e}") from e
        self._parts = [self._open_part(i, st) for i, st in enumerate(self._m.partitions)]
        self._drop_files_from(len(self._parts))
        self._partition = self._pos = 0
        self._last_encrypted = False  # flag of the record the last read returned
        self._epoch = 0  # bumped by every commit that cuts committed objects
        self._replicating: list[tuple[int, int]] | None = None
        self._closed = False

    @classmethod
    def create(
        cls,
        path: Path,
        manifest: Manifest,
        pool: ChunkPool,
        **kwargs: Any,
    ) -> Self:
        """Write a fresh manifest into the (new, empty) directory and open it."""
        manifest.created = manifest.created or time.time()
        atomic_write_json(Path(path) / MANIFEST, manifest.to_json())
        return cls(path, pool, **kwargs)

    def _open_part(self, n: int, st: PartitionState) -> _Part:
        idx = RecordIndex(self.path / f"p{n}.index", st.objects)
        cmap = ChunkMap(self.path / f"p{n}.chunks", st.chunks)
        if (idx.stream_end, idx.filemarks) != (st.stream, st.filemarks):
            raise MediumCorrupt(f"{self.path}: partition {n} index disagrees with the manifest")
        idx.low_water = min(idx.low_water, st.dirty_objects)
        cmap.low_water = min(cmap.low_water, st.dirty_chunks)
        stream = PartitionStream(
            cmap, st.stream, self.pool, self._m.chunker, self._max_inflight
        )
        return _Part(idx, stream, replace(st), min(st.replicated_stream, st.stream))

    def _drop_files_from(self, n: int) -> None:
        for k in range(n, MAX_PARTITIONS):
            for suffix in ("index", "chunks"):
                (self.path / f"p{k}.{suffix}").unlink(missing_ok=True)

    # ---- identity and geometry ----------------------------------------------

    @property
    def barcode(self) -> str:
        return self._m.barcode

    @property
    def worm(self) -> bool:
        return self._m.worm

    @property
    def cleaning(self) -> bool:
        return self._m.cleaning

    @property
    def write_protected(self) -> bool:
        return self._m.write_protected

    @property
    def density_code(self) -> int:
        return self._m.density_code

    @property
    def capacity_bytes(self) -> int:
        return sum(p.capacity for p in self._m.partitions)

    @property
    def generation(self) -> int:
        return self._m.generation

    @property
    def chunker_params(self) -> ChunkerParams:
        return self._m.chunker

    def partition_capacities(self) -> Sequence[int]:
        return tuple(p.capacity for p in self._m.partitions)

    def partition_used(self, partition: int) -> int:
        with self._lock:
            return self._part(partition).stream.length

    def _part(self, partition: int) -> _Part:
        if not 0 <= partition < len(self._parts):
            raise InvalidPartition(f"partition {partition} does not exist")
        return self._parts[partition]

    @property
    def _cur(self) -> _Part:
        return self._parts[self._partition]

    def _capacity(self) -> int:
        return self._m.partitions[self._partition].capacity

    def _check_writable(self) -> None:
        if self._closed:
            raise TapeError(f"{self.barcode}: cartridge is closed")
        if self._m.write_protected:
            raise WriteProtected(self.barcode)

    def _relayout(self, capacities: list[int]) -> None:
        # The new, empty layout is committed first; the old files are emptied after.
        for part in self._parts:
            part.stream.discard()
        states = [PartitionState(capacity=c) for c in capacities]
        self._store_manifest(states)
        self._epoch += 1
        for part in self._parts:
            part.idx.close()
            part.stream.cmap.close()
        self._drop_files_from(0)
        self._parts = [self._open_part(i, st) for i, st in enumerate(states)]
        self._partition = self._pos = 0

    def close(self) -> None:
        """Durability point, then release the files. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._commit()
            for part in self._parts:
                part.idx.close()
                part.stream.cmap.close()
            self._closed = True

    # ---- commits -------------------------------------------------------------------

    def _truncate(self, p: int) -> None:
        """Discard objects from p on (current partition)."""
        part = self._cur
        if p >= part.idx.count:
            return
        x = part.idx.stream_offset(p)
        prefix = part.stream.prepare_truncate(x)  # everything that can fail, first
        st = part.state
        if p < st.objects:
            # Committed objects go: commit the cut before anything can overwrite them.
            cut = replace(
                st,
                objects=p,
                filemarks=part.idx.filemarks_before(p),
                stream=x,
                chunks=min(st.chunks, part.stream.covering(x)),
            )
            states = [q.state for q in self._parts]
            states[self._partition] = cut
            self._write_manifest(states)
            self._epoch += 1
        part.idx.truncate(p)
        part.stream.apply_truncate(x, prefix)
        part.rep_stream = min(part.rep_stream, x)

    def _commit(self, *, force: bool = False) -> None:
        for part in self._parts:
            part.stream.finish()
        try:
            for part in self._parts:
                part.idx.sync()
                part.stream.cmap.sync()
        except OSError as e:
            raise BackendFailure(f"{self.path}: {e}") from e
        states = [
            replace(
                q.state,
                objects=q.idx.count,
                filemarks=q.idx.filemarks,
                stream=q.stream.length,
                chunks=q.stream.cmap.count,
            )
            for q in self._parts
        ]
        if force or states != [q.state for q in self._parts]:
            self._write_manifest(states)

    def _write_manifest(self, states: list[PartitionState]) -> None:
        for n, (st, part) in enumerate(zip(states, self._parts, strict=False)):
            held = (
                self._replicating[n] if self._replicating and n < len(self._replicating) else None
            )
            st.dirty_objects = min(part.idx.low_water, held[0] if held else st.objects)
            st.dirty_chunks = min(part.stream.cmap.low_water, held[1] if held else st.chunks)
            st.replicated_stream = min(part.rep_stream, st.stream)
        self._store_manifest(states)
        for st, part in zip(states, self._parts, strict=False):
            part.state = replace(st)

    def _store_manifest(self, states: list[PartitionState]) -> None:
        m = replace(self._m, partitions=states, generation=self._m.generation + 1)
        try:
            atomic_write_json(self.path / MANIFEST, m.to_json())
        except OSError as e:
            raise BackendFailure(f"{self.path}: manifest: {e}") from e
        self._m = m
        if self._on_commit is not None:
            self._on_commit(self)

    # ---- replication, GC and status (replica.py, store.py) ---------------------------

    def snapshot(self) -> Snapshot:
        """The committed state and what changed since the last replication; starts a new
        dirty period (hand it back with `replicated()` or `replication_failed()`)."""
        with self._lock:
            dirty = []
            for part in self._parts:
                st = part.state
                dirty.append(
                    (
                        min(part.idx.take_dirty(st.objects), st.objects),
                        min(part.stream.cmap.take_dirty(st.chunks), st.chunks),
                    )
                )
            self._replicating = dirty
            return Snapshot(self._m.generation, self._m.to_json(), dirty, self._epoch)

    def dirty_chunks(self) -> list[int]:
        """Per partition, the first chunk-map entry that may differ from the bucket's."""
        with self._lock:
            held = self._replicating or []
            return [
                min(
                    [part.stream.cmap.low_water, part.state.dirty_chunks]
                    + [h[1] for h in held[n : n + 1]]
                )
                for n, part in enumerate(self._parts)
            ]

    def epoch(self) -> int:
        with self._lock:
            return self._epoch

    def replicated(self, snap: Snapshot) -> None:
        with self._lock:
            self._replicating = None
            if snap.epoch == self._epoch:
                for part, p in zip(self._parts, snap.manifest["partitions"], strict=False):
                    part.rep_stream = max(part.rep_stream, min(p["stream"], part.stream.length))

    def replication_failed(self, snap: Snapshot) -> None:
        with self._lock:
            self._replicating = None
            for part, (di, dc) in zip(self._parts, snap.dirty, strict=False):
                part.idx.low_water = min(part.idx.low_water, di)
                part.stream.cmap.low_water = min(part.stream.cmap.low_water, dc)

    @property
    def name(self) -> str:
        return f"tape:{self.barcode}"

    def chunk_ids(self) -> Iterator[bytes]:
        """Every chunk id this cartridge references (the `ChunkOwner` of thur.pool.gc):
        committed, mapped but uncommitted, and stored but not yet mapped. Streams
        from the chunk-map files; duplicates possible."""
        with self._lock:
            plan = []
            for part in self._parts:
                cmap = part.stream.cmap
                if not self._closed:
                    cmap.spill()
                stop = max(cmap.count, part.state.chunks)
                plan.append((cmap.path, stop, list(part.stream.inflight_ids())))
        for path, stop, inflight in plan:
            yield from inflight
            yield from chunk_ids_from_file(path, stop)

    def local_only_bytes(self) -> int:
        """Record bytes a restore from the bucket would not bring back (yet)."""
        with self._lock:
            return sum(max(0, p.stream.length - p.rep_stream) for p in self._parts)

    def status(self) -> dict[str, Any]:
        with self._lock:
            parts = []
            for n, part in enumerate(self._parts):
                parts.append(
                    {
                        "partition": n,
                        "capacity": part.state.capacity,
                        "used": part.stream.length,
                        "objects": part.idx.count,
                        "filemarks": part.idx.filemarks,
                        "committed_objects": part.state.objects,
                        "chunks": part.stream.cmap.count,
                        "unstored_bytes": part.stream.unstored_bytes,
                        "local_only_bytes": max(0, part.stream.length - part.rep_stream),
                    }
                )
            return {
                "barcode": self.barcode,
                "worm": self.worm,
                "cleaning": self.cleaning,
                "write_protected": self.write_protected,
                "density_code": self.density_code,
                "capacity": self.capacity_bytes,
                "full_capacity": self._m.full_capacity,
                "load_count": self.load_count,
                "generation": self._m.generation,
                "position": {"partition": self._partition, "object_id": self._pos},
                "local_only_bytes": sum(p["local_only_bytes"] for p in parts),
                "partitions": parts,
            }

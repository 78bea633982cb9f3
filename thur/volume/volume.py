"""`PoolVolume`: the production `Volume`, a thin disk over the deduplicated chunk pool.

A volume is a directory (`VolumeStore` names it)::

    volume.json     the manifest (manifest.py), replaced atomically
    pages.table     the page table (table.py): page -> chunk id, sparse
    replica.json    what the bucket holds (replica.py; written by the replicator)

    journal.<epoch> the write journal (journal.py): changes since the last fence

The page cache, write-back and fences are in core.py; this module is the SBC
surface. What a crash leaves (docs/VOLUMES.md has the full statement): every
acknowledged command survives kill -9 of the daemon (the journal); after
`flush()` or a FUA write returns, it survives power loss too. After a power
loss a page changed since the last fence reads as one of the contents it has
had since that fence (never a mix of two, never garbage), like a disk with a
volatile write cache (WCE=1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from thur.volume.core import MANIFEST, VolumeCore, volume_error
from thur.volume.journal import SET, WRITE, ZERO, Record
from thur.volume.manifest import check_geometry
from thur.volume.protocol import (
    MediumCorrupt,
    OutOfRange,
    ShrinkRefused,
    Volume,
    VolumeError,
)

COPY_STEP = 1 << 20  # bytes per read+write step of a copy that cannot share chunks
SHARE_STEP = 1024  # pages per step of a chunk-sharing copy


class PoolVolume(VolumeCore):
    """Implements `thur.volume.Volume`; also a `thur.pool.ChunkOwner`."""

    # ---- identity and geometry --------------------------------------------------

    @property
    def name(self) -> str:
        return self._m.name

    @property
    def block_size(self) -> int:
        return self._m.block_size

    @property
    def num_blocks(self) -> int:
        return self._m.num_blocks

    @property
    def page_size(self) -> int:
        return self._ps

    @property
    def serial(self) -> str:
        return self._m.serial

    @property
    def lun(self) -> int | None:
        return self._m.lun

    @property
    def write_protected(self) -> bool:
        return self._m.write_protected

    @property
    def fence_waits_for_upload(self) -> bool:
        return self._m.fence_waits_for_upload

    @property
    def generation(self) -> int:
        return self._m.generation

    def manifest_json(self) -> dict[str, Any]:
        """The manifest as last saved (a snapshot; safe without the lock)."""
        return dict(self._m_json)

    def set_flags(
        self, *, write_protected: bool | None = None, fence_waits_for_upload: bool | None = None
    ) -> None:
        changes = {
            k: v
            for k, v in (
                ("write_protected", write_protected),
                ("fence_waits_for_upload", fence_waits_for_upload),
            )
            if v is not None
        }
        with self._lock:
            self._check_open()
            self._save_manifest(**changes)

    def _save_manifest(self, **changes: Any) -> None:
        """Commit a manifest change (atomic replace); memory follows only on success."""
        new = replace(self._m, generation=self._m.generation + 1, **changes)
        try:
            new.save(self.path / MANIFEST)
        except OSError as e:
            raise volume_error(e) from e
        self._m, self._m_json = new, new.to_json()
        self._changed(None)

    def _pages(self, lba: int, blocks: int) -> Iterator[tuple[int, int, int, int]]:
        """(page, start in page, length, offset in the transfer) of a block range."""
        bs, ps = self._m.block_size, self._ps
        off, end = lba * bs, (lba + blocks) * bs
        while off < end:
            page, start = divmod(off, ps)
            n = min(ps - start, end - off)
            yield page, start, n, off - lba * bs
            off += n

    # ---- I/O ----------------------------------------------------------------------

    def read(self, lba: int, blocks: int) -> bytes:
        with self._lock:
            self._check_open()
            self._check_range(lba, blocks)
            out = bytearray(blocks * self._m.block_size)
            try:
                for page, start, n, at in self._pages(lba, blocks):
                    out[at : at + n] = memoryview(self._page(page))[start : start + n]
            except Exception as e:
                raise volume_error(e) from e
            return bytes(out)

    def write(self, lba: int, data: bytes | memoryview, *, fua: bool = False) -> None:
        bs = self._m.block_size
        if len(data) % bs:
            raise ValueError(f"write of {len(data)} bytes is not a multiple of {bs}")
        view = memoryview(data).cast("B")
        with self._lock:
            self._check_writable()
            self._check_range(lba, len(view) // bs)
            try:
                self._journal.write(lba * bs, view)
                touched = self._write_bytes(lba * bs, view)
                self._journaled()
            except Exception as e:
                raise volume_error(e) from e
            if fua:
                self._fence(touched)

    def _write_bytes(self, offset: int, view: memoryview) -> list[int]:
        """Merge bytes into the cached pages; the pages touched."""
        bs = self._m.block_size
        touched = []
        for page, start, n, at in self._pages(offset // bs, len(view) // bs):
            self._apply(page, start, view[at : at + n])
            touched.append(page)
        return touched

    def flush(self) -> None:
        with self._lock:
            self._check_open()
            self._fence(None)

    def unmap(self, lba: int, blocks: int) -> None:
        self.write_zeroes(lba, blocks, unmap=True)

    def write_zeroes(self, lba: int, blocks: int, *, unmap: bool) -> None:
        """Zeros; whole pages are deallocated either way (a zero page is never
        stored, and LBPRZ=1 makes that invisible), partial pages are zero-filled.
        Not a fence: like a write, it is durable at the next flush."""
        with self._lock:
            self._check_writable()
            self._check_range(lba, blocks)
            bs = self._m.block_size
            try:
                self._journal.zero(lba * bs, blocks * bs)
                self._zero_bytes(lba * bs, blocks * bs)
                self._journaled()
            except Exception as e:
                raise volume_error(e) from e

    def _zero_bytes(self, offset: int, length: int) -> None:
        bs = self._m.block_size
        whole: list[int] = []
        for page, start, n, _at in self._pages(offset // bs, length // bs):
            if n == self._ps:
                whole.append(page)
            else:
                self._apply(page, start, self._zero[:n])
        if whole:
            self._deallocate(whole[0], whole[-1] + 1)

    def _deallocate(self, first: int, stop: int) -> None:
        """Unmap pages [first, stop): cached copies dropped, entries cleared."""
        pages = {p for p, _ in self.cache.pages_in(first, stop)}
        pages.update(p for p, _ in self.table.mapped(first, stop))
        pages.update(p for p in self._inflight if first <= p < stop)
        self._replace(sorted(pages), [None] * len(pages))

    def _replace(self, pages: list[int], ids: list[bytes | None]) -> None:
        """Point pages at chunks (or unmap them), bypassing the cache."""
        self._journal.sync()  # write-ahead: the record before the entries
        for page, cid in zip(pages, ids, strict=True):
            while page in self._inflight:  # an older write-back must not land after us
                self._cond.wait()
            self.cache.drop(page)
            self.table.set(page, cid)
            self._checkpoint_covered(page, None)
            if cid is not None and self._replayed_ids is not None:
                self._replayed_ids.add(cid)
        self._changed(pages)

    # ---- thin provisioning -------------------------------------------------------

    def is_mapped(self, lba: int, blocks: int) -> list[tuple[int, int, bool]]:
        with self._lock:
            self._check_open()
            self._check_range(lba, blocks)
            if blocks == 0:
                return []
            bpp, end = self._bpp, lba + blocks
            first, stop = lba // bpp, (end - 1) // bpp + 1
            try:
                mapped = {p for p, _ in self.table.mapped(first, stop)}
            except OSError as e:
                raise volume_error(e) from e
            for page, pg in self.cache.pages_in(first, stop):
                if pg.dirty:  # what the entry will say once written back
                    if pg.data == self._zero:
                        mapped.discard(page)
                    else:
                        mapped.add(page)
            runs: list[tuple[int, int, bool]] = []
            cur = lba
            for page in sorted(mapped):
                a, b = max(page * bpp, lba), min((page + 1) * bpp, end)
                if a > cur:
                    runs.append((cur, a - cur, False))
                if runs and runs[-1][2] and runs[-1][0] + runs[-1][1] == a:
                    runs[-1] = (runs[-1][0], b - runs[-1][0], True)
                else:
                    runs.append((a, b - a, True))
                cur = b
            if cur < end:
                runs.append((cur, end - cur, False))
            return runs

    def mapped_bytes(self) -> int:
        """Bytes of pages mapped in the table (allocated), excluding the cache."""
        return sum(1 for _ in self.table.mapped()) * self._ps

    # ---- compare and write, copy, resize ----------------------------------------

    def compare_and_write(self, lba: int, verify: bytes, data: bytes) -> int | None:
        if len(verify) != len(data):
            raise ValueError("verify and write data differ in length")
        with self._lock:  # held across the compare and the write: atomic per volume
            current = self.read(lba, len(verify) // self._m.block_size)
            if current != verify:
                return _first_difference(current, verify)
            self.write(lba, data)
            return None

    def copy_from(self, src: Volume, src_lba: int, dst_lba: int, blocks: int) -> None:
        if src.block_size != self._m.block_size:
            raise ValueError("copy between volumes of different block sizes")
        with self._lock:
            self._check_writable()
            self._check_range(dst_lba, blocks)
        if not 0 <= src_lba <= src.num_blocks - blocks:
            raise OutOfRange(f"source blocks [{src_lba}, {src_lba + blocks}) out of range")
        bs, ps = self._m.block_size, self._ps
        so, do, n = src_lba * bs, dst_lba * bs, blocks * bs
        overlap = src is self and so < do + n and do < so + n
        shareable = (
            isinstance(src, PoolVolume)
            and src.pool is self.pool
            and src.page_size == ps
            and so % ps == do % ps
            and not overlap
        )
        if not shareable:
            self._copy_bytes(src, so, do, n)
            return
        assert isinstance(src, PoolVolume)
        head = min(n, (ps - do % ps) % ps)
        full = (n - head) // ps
        self._copy_bytes(src, so, do, head)
        sp, dp = (so + head) // ps, (do + head) // ps
        for i in range(0, full, SHARE_STEP):
            k = min(SHARE_STEP, full - i)
            ids = src._export_pages(sp + i, k)
            self.pool.retain(c for c in ids if c is not None)  # before we reference them
            with self._lock:
                self._check_writable()
                try:
                    self._journal.set(dp + i, ids)
                    self._replace(list(range(dp + i, dp + i + k)), ids)
                    self._journaled()
                except Exception as e:
                    raise volume_error(e) from e
        tail = head + full * ps
        self._copy_bytes(src, so + tail, do + tail, n - tail)

    def _export_pages(self, first: int, count: int) -> list[bytes | None]:
        """Chunk ids of pages [first, first + count), written back first."""
        with self._lock:
            self._check_open()
            try:
                pages = self.cache.pages_in(first, first + count)
                self._writeback(p for p, pg in pages if pg.dirty)
                mapped = dict(self.table.mapped(first, first + count))
            except Exception as e:
                raise volume_error(e) from e
            return [mapped.get(p) for p in range(first, first + count)]

    def _copy_bytes(self, src: Volume, so: int, do: int, n: int) -> None:
        """Read+write in steps; backwards when the ranges overlap with dst after src."""
        bs = self._m.block_size
        steps = [(i, min(COPY_STEP, n - i)) for i in range(0, n, COPY_STEP)]
        if src is self and so < do:
            steps.reverse()
        for i, k in steps:
            self.write((do + i) // bs, src.read((so + i) // bs, k // bs))

    def resize(self, num_blocks: int) -> None:
        with self._lock:
            self._check_open()
            check_geometry(self._m.block_size, self._ps, num_blocks)
            if num_blocks < self._m.num_blocks:
                self._check_shrink(num_blocks)
                # A journal never holds records beyond the end it is replayed into.
                self._fence(None)
            self._save_manifest(num_blocks=num_blocks)

    # ---- journal replay ------------------------------------------------------------

    def _redo(self, record: Record) -> None:
        if record.kind == WRITE:
            self._write_bytes(record.a, memoryview(record.payload))
        elif record.kind == ZERO:
            self._zero_bytes(record.a, record.b)
        elif record.kind == SET:
            self._replace(list(range(record.a, record.a + record.b)), record.ids())

    def _check_shrink(self, num_blocks: int) -> None:
        end = num_blocks * self._m.block_size
        cut, rest = divmod(end, self._ps)  # page holding the new end, bytes kept in it
        try:
            self._fence([p for p, pg in self.cache.pages_in(cut, 1 << 62) if pg.dirty])
            beyond = next(iter(self.table.mapped(cut + (1 if rest else 0))), None)
            if beyond is not None:
                raise ShrinkRefused(
                    f"page {beyond[0]} (from block {beyond[0] * self._bpp}) is allocated "
                    f"beyond the new end at block {num_blocks}"
                )
            # The page holding the new end keeps its tail; it must be zeros, or a
            # later grow would show old bytes where the host expects zeros.
            if rest and self._page(cut)[rest:] != self._zero[rest:]:
                raise ShrinkRefused(f"blocks from {num_blocks} to the end of page {cut} hold data")
        except VolumeError:
            raise
        except Exception as e:
            raise volume_error(e) from e
        for page, _pg in self.cache.pages_in(cut + (1 if rest else 0), 1 << 62):
            self.cache.drop(page)

    # ---- GC owner ---------------------------------------------------------------

    def chunk_ids(self) -> Iterator[bytes]:
        """Every chunk the page table names (`thur.pool.ChunkOwner`).

        The table is fsync'd after the scan: an entry GC saw must not revert,
        after a power loss, to one naming a chunk GC then swept.
        """
        for _page, cid in self.table.mapped():
            yield cid
        self.table.sync()


def _first_difference(a: bytes, b: bytes) -> int:
    step = 4096
    for off in range(0, len(a), step):
        x, y = a[off : off + step], b[off : off + step]
        if x != y:
            return off + next(i for i in range(len(x)) if x[i] != y[i])
    raise MediumCorrupt("compare found no difference")  # unreachable: a != b

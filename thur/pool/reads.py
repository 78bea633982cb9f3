"""The local store's read path: lookups, chunk reads, and the uploader's batched reads.

A mixin of `LocalStore` (store.py), split out like space.py. What is in the
pool is what is committed in `pool.sqlite`; lookups use the reading
connection (`_rdb` under `_rlock`), which never waits for a commit.

A read can race a free (eviction, GC): freeing deletes the row first, then
punches the record's bytes. So a read looks the row up, reads the bytes,
and looks the row up again: the same row both times means the bytes read
were not yet punched; a different or missing row means the chunk went
meanwhile (ChunkMissing, never someone else's bytes).

The uploader reads a whole pack's chunks at once (`read_many`): one lookup
statement per 500 chunks before the reads and one after, instead of two per
chunk (see thur/sqlbatch.py for why statements count).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence

from thur.sqlbatch import in_lists

from . import chunkfile
from .chunkfile import Encoded
from .chunkid import chunk_id
from .codec import Compressor
from .errors import ChunkCorrupt, ChunkMissing
from .layout import ChunkFiles
from .segments import Loc, SegmentFiles

Found = tuple[int, int, int | None, int | None]  # size, durable, segment, offset


class ReadMixin:
    _rdb: sqlite3.Connection
    _rlock: threading.Lock
    _files: ChunkFiles
    _segs: SegmentFiles
    compressor: Compressor
    _touch: Callable[[bytes], None]  # space.py (LRU order)

    def get(self, cid: bytes) -> bytes:
        """Return the verified plaintext; ChunkMissing or ChunkCorrupt otherwise."""
        enc = self.read_encoded(cid)
        plain = self.compressor.decompress(cid, enc.codec, enc.payload, enc.plain_len)
        if chunk_id(plain) != cid:
            raise ChunkCorrupt(cid, "BLAKE3 of the plaintext does not match the id")
        return plain

    def read_encoded(self, cid: bytes) -> Encoded:
        """The stored encoding (structurally checked, not hash-verified)."""
        return chunkfile.decode(cid, self._read(cid))

    def read_checked(self, cid: bytes) -> Encoded:
        """The stored encoding, verified to be the payload of the id's plaintext.

        For the uploader: a SEALED v2 file whose seal matches is exactly the
        payload this pool produced from plaintext it hashed to `cid`, so only
        the seal (BLAKE3 of the payload) is checked. Any other file (v1,
        unsealed) is decoded and its plaintext re-hashed. ChunkCorrupt if
        either check fails, ChunkMissing if it is gone.
        """
        return self._checked(cid, self._read(cid))

    def read_many(
        self, ids: Sequence[bytes], *, verify: bool
    ) -> list[tuple[bytes, Encoded | ChunkMissing | ChunkCorrupt]]:
        """`read_checked` (verify) or `read_encoded` of each id, in order, batched.

        A chunk that is gone or damaged gets its ChunkMissing or ChunkCorrupt
        in place of the encoding, so one bad chunk does not fail the others.
        Any other error (an I/O error) is raised. The caller holds every
        result in memory: pass a pack's worth, not the whole pool.
        """
        before = self._lookup_many(ids)
        raws: dict[bytes, bytes] = {}
        errors: dict[bytes, ChunkMissing | ChunkCorrupt | FileNotFoundError] = {}
        for cid in dict.fromkeys(ids):
            found = before.get(cid)
            if found is None:
                errors[cid] = ChunkMissing(cid)
                continue
            try:
                raws[cid] = self._read_at(cid, found)
            except (FileNotFoundError, ChunkCorrupt, ChunkMissing) as e:
                errors[cid] = e
        after = self._lookup_many(list(before))
        done: dict[bytes, Encoded | ChunkMissing | ChunkCorrupt] = {}
        for cid in dict.fromkeys(ids):
            error = errors.get(cid)
            if cid in before and after.get(cid) != before[cid]:
                error = ChunkMissing(cid)  # freed while we read it
            if isinstance(error, (ChunkMissing, ChunkCorrupt)):
                done[cid] = error
                continue
            if error is not None:
                raise error  # the row is still there but its segment is not
            raw = raws.pop(cid)  # dropped as decoded: a pack's worth in memory, not two
            try:
                done[cid] = self._checked(cid, raw) if verify else chunkfile.decode(cid, raw)
            except ChunkCorrupt as e:
                done[cid] = e
        return [(cid, done[cid]) for cid in ids]

    def _checked(self, cid: bytes, raw: bytes) -> Encoded:
        parsed = chunkfile.parse(cid, raw)
        enc = parsed.enc
        if parsed.seal is not None and not parsed.seal_ok():
            raise ChunkCorrupt(cid, "chunk file seal (BLAKE3 of the payload) does not match")
        if not parsed.flags & chunkfile.SEALED:
            plain = self.compressor.decompress(cid, enc.codec, enc.payload, enc.plain_len)
            if chunk_id(plain) != cid:
                raise ChunkCorrupt(cid, "BLAKE3 of the plaintext does not match the id")
        return enc

    def _read(self, cid: bytes) -> bytes:
        """The chunk file bytes (segment record without its id, or the whole file)."""
        found = self._lookup(cid)
        if found is None:
            raise ChunkMissing(cid)
        try:
            raw = self._read_at(cid, found)
        except (FileNotFoundError, ChunkCorrupt):
            if self._lookup(cid) != found:
                raise ChunkMissing(cid) from None  # freed between lookup and read
            raise
        if self._lookup(cid) != found:
            raise ChunkMissing(cid)  # see the module docstring
        return raw

    def _read_at(self, cid: bytes, found: Found) -> bytes:
        """The bytes where `found` says; the caller checks the row again afterwards."""
        size, durable, seg, off = found
        if durable:
            self._touch(cid)
        if seg is None:
            try:
                return self._files.read(cid)
            except FileNotFoundError:
                raise ChunkMissing(cid) from None  # evicted between lookup and read
        assert off is not None
        return self._segs.read(cid, Loc(seg, off, size))

    def locate(self, cid: bytes) -> tuple[str, int, int]:
        """(path, offset, length) of the chunk file bytes on disk, for tools and tests.

        A segment record's chunk file starts after the record's id; a chunk
        file of a schema 1 pool is the whole file.
        """
        found = self._lookup(cid)
        if found is None:
            raise ChunkMissing(cid)
        size, _durable, seg, off = found
        if seg is None:
            return self._files.path(cid), 0, size
        assert off is not None
        return self._segs.chunk_file_span(Loc(seg, off, size))

    def contains(self, cid: bytes) -> bool:
        return self._lookup(cid) is not None

    def is_durable(self, cid: bytes) -> bool:
        found = self._lookup(cid)
        return found is not None and bool(found[1])

    def _lookup(self, cid: bytes) -> Found | None:
        """(size, durable, segment, offset) of a committed chunk, or None."""
        with self._rlock:
            # fetchall: a half-read cursor would keep a read transaction open.
            rows = self._rdb.execute(
                "SELECT size, durable, seg, off FROM chunks WHERE id = ?", (cid,)
            ).fetchall()
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def _lookup_many(self, ids: Sequence[bytes]) -> dict[bytes, Found]:
        """`_lookup` of many ids, one statement per sqlbatch.BATCH; absent ids are left out."""
        out: dict[bytes, Found] = {}
        for marks, part in in_lists(ids):
            with self._rlock:
                rows = self._rdb.execute(
                    f"SELECT id, size, durable, seg, off FROM chunks WHERE id IN ({marks})", part
                ).fetchall()
            for cid, *found in rows:
                out[bytes(cid)] = tuple(found)  # type: ignore[assignment]
        return out

"""One partition's content stream: records in, FastCDC chunks into the pool.

The bytes of all records of a partition form one stream, cut by
`StreamChunker` independently of record boundaries. The stream is, in order:

    [0, cmap.end)            chunks in the chunk map (index.py), in the pool
    [cmap.end, length)       `tail`: bytes of chunks still being stored
                             (`_inflight`) followed by the chunker's buffer

Chunks are stored through `pool.submit` (the pool's put workers, which group-commit
their fsyncs) so that chunking the next record overlaps with hashing, compressing
and fsyncing the previous chunk;
at most `max_inflight` are in flight. A failed put is retried synchronously
by the next command, which fails *before* it accepts anything if the retry
fails too: an acknowledged record is never dropped behind the host's back,
and a rejected one was never added.

Truncation at stream offset x re-chunks from the chunk that holds x: its
prefix is fetched from the pool and fed to a fresh chunker. FastCDC decides a
cut from the bytes since the chunk's start only, so the new chunk that takes
that slot in the map starts with the same bytes and is at least as long as
the prefix (with the same chunker parameters, which the manifest pins). That
is what makes overwriting a committed chunk-map entry harmless.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Protocol

from thur.pool import ChunkerParams, PutResult, StreamChunker, as_model_error
from thur.tape.errors import BackendFailure, Backpressure, MediumCorrupt, TapeError
from thur.tape.index import ChunkMap

CACHE_CHUNKS = 4  # decoded chunks kept for sequential reads


class ChunkPool(Protocol):
    """What a cartridge needs from the pool (`TieredPool` or a bare `LocalStore`)."""

    def put(self, data: bytes) -> PutResult: ...
    def submit(self, data: bytes) -> Future[PutResult]: ...
    def get(self, cid: bytes) -> bytes: ...


def tape_error(e: BaseException) -> TapeError:
    """The one place pool and disk failures become the medium's typed errors."""
    return as_model_error(
        e, TapeError, backpressure=Backpressure, corrupt=MediumCorrupt, failure=BackendFailure
    )


class Tail:
    """Bytes appended at the end and consumed from the front, without copying: the
    record objects themselves are kept (a bytearray would memmove megabytes of carried
    chunker window on every regrowth)."""

    def __init__(self, data: bytes = b"") -> None:
        self._pieces: deque[bytes] = deque()
        self._skip = 0  # bytes of the first piece already consumed
        self.size = 0
        if data:
            self.append(data)

    def append(self, data: bytes | bytearray | memoryview) -> None:
        piece = data if isinstance(data, bytes) else bytes(data)
        self._pieces.append(piece)
        self.size += len(piece)

    def drop(self, n: int) -> None:
        """Consume n bytes from the front."""
        self.size -= n
        n += self._skip
        pieces = self._pieces
        while pieces and n >= len(pieces[0]):
            n -= len(pieces.popleft())
        self._skip = n

    def slice(self, start: int, stop: int) -> bytes:
        out: list[bytes] = []
        at = -self._skip  # offset of the current piece's first byte
        for piece in self._pieces:
            end = at + len(piece)
            if end > start and at < stop:
                out.append(piece[max(0, start - at) : min(len(piece), stop - at)])
            if end >= stop:
                break
            at = end
        return out[0] if len(out) == 1 else b"".join(out)

    def head(self, n: int) -> bytes:
        return self.slice(0, n)


class PartitionStream:
    def __init__(
        self,
        cmap: ChunkMap,
        length: int,
        pool: ChunkPool,
        params: ChunkerParams,
        max_inflight: int = 32,
    ) -> None:
        self.cmap = cmap
        self.length = length
        self.pool = pool
        self.params = params
        self.max_inflight = max_inflight
        self._chunker = StreamChunker(params)
        self._tail = Tail()
        self._inflight: deque[tuple[bytes, Future[PutResult]]] = deque()
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        # Unprimed: after a truncation commit the map may reach past the
        # stream's end; the chunker is restarted lazily at the first append.
        self._primed = cmap.end <= length
        if cmap.end < length:
            raise MediumCorrupt(f"chunk map ends at {cmap.end}, stream at {length}")

    @property
    def map_end(self) -> int:
        return self.cmap.end

    @property
    def unstored_bytes(self) -> int:
        """Stream bytes not yet in the pool (RAM only)."""
        return max(0, self.length - self.cmap.end)

    # ---- writing ------------------------------------------------------------

    def append(self, record: bytes | bytearray | memoryview) -> None:
        if not self._primed:
            self.truncate(self.length)
        self._make_room()
        self._tail.append(record)
        self.length += len(record)
        self._submit(self._chunker.feed(record))

    def finish(self) -> None:
        """Forced cut at the stream's end; returns once every chunk is stored and mapped."""
        if self._primed:
            self._submit(self._chunker.finish())
        self.drain(everything=True)

    def _submit(self, chunks: list[bytes]) -> None:
        for c in chunks:
            # The pool hashes, compresses and writes on its own workers, group-committing
            # their fsyncs; the future resolves once the chunk is durable.
            self._inflight.append((c, self.pool.submit(c)))

    def _make_room(self) -> None:
        self.drain()
        while len(self._inflight) >= self.max_inflight:
            self._drain_one()

    def drain(self, *, everything: bool = False) -> None:
        """Map finished puts in stream order (all of them, waiting, if `everything`)."""
        while self._inflight and (everything or self._inflight[0][1].done()):
            self._drain_one()

    def _drain_one(self) -> None:
        chunk, fut = self._inflight[0]
        try:
            result = fut.result()
        except Exception:
            try:
                result = self.pool.put(chunk)  # the retry; its failure goes to the host
            except Exception as e:
                raise tape_error(e) from e
        self._inflight.popleft()
        self.cmap.add(len(chunk), result.chunk_id)
        self._tail.drop(len(chunk))

    def inflight_ids(self) -> Iterator[bytes]:
        for _chunk, fut in list(self._inflight):
            if fut.done() and fut.exception() is None:
                yield fut.result().chunk_id

    def discard(self) -> None:
        """Forget everything not yet mapped (format): waits for running puts."""
        for _chunk, fut in self._inflight:
            fut.exception()
        self._inflight.clear()
        self._tail = Tail()
        self._chunker.close()
        self._chunker = StreamChunker(self.params)
        self._cache.clear()
        self.length = self.cmap.end
        self._primed = True

    # ---- truncation -----------------------------------------------------------

    def covering(self, x: int) -> int:
        """Chunks of the (committed-compatible) map that cover [0, x), x <= length.

        Past the mapped part, x lies in the chunk at index `cmap.count` that was
        being re-chunked when the stream was primed: one more chunk.
        """
        if x <= self.cmap.end:
            return self.cmap.needed(x)
        return self.cmap.count + 1

    def prepare_truncate(self, x: int) -> bytes | None:
        """Everything that can fail before a truncation to x: drain, fetch the prefix."""
        self.drain(everything=True)
        if x >= self.cmap.end:
            return None
        k = self.cmap.find(x)
        start, _length, cid = self.cmap.entry(k)
        return self.chunk(cid)[: x - start] if x > start else b""

    def apply_truncate(self, x: int, prefix: bytes | None) -> None:
        if x >= self.cmap.end:
            restart = self._tail.head(x - self.cmap.end)
        else:
            self.cmap.truncate(self.cmap.find(x))
            restart = prefix or b""
        self._tail = Tail(restart)
        self.length = x
        self._chunker.close()
        self._chunker = StreamChunker(self.params)
        self._primed = True
        self._submit(self._chunker.feed(restart))

    def truncate(self, x: int) -> None:
        self.apply_truncate(x, self.prepare_truncate(x))

    # ---- reading ---------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        end = offset + length
        pieces: list[bytes] = []
        x = offset
        mapped_end = min(end, self.cmap.end)
        if x < mapped_end:
            i = self.cmap.find(x)
            while x < mapped_end:
                start, clen, cid = self.cmap.entry(i)
                data = self.chunk(cid, i)
                pieces.append(data[x - start : min(mapped_end, start + clen) - start])
                x += len(pieces[-1])
                i += 1
        if x < end:
            at = x - self.cmap.end
            pieces.append(self._tail.slice(at, at + end - x))
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def chunk(self, cid: bytes, index: int | None = None) -> bytes:
        data = self._cache.get(cid)
        if data is not None:
            self._cache.move_to_end(cid)
            return data
        try:
            data = self.pool.get(cid)
        except Exception as e:
            raise tape_error(e) from e
        self._cache[cid] = data
        if len(self._cache) > CACHE_CHUNKS:
            self._cache.popitem(last=False)
        prefetch = getattr(self.pool, "prefetch", None)
        if prefetch is not None and index is not None:
            ahead = range(index + 1, min(index + 3, self.cmap.count))
            prefetch([self.cmap.entry(j)[2] for j in ahead])
        return data

"""Cutting byte streams into chunks.

Two chunkers:

- `StreamChunker`: content-defined chunking (FastCDC 2020, via pyfastcdc) for
  tape streams. Data is *pushed* in pieces of any size (tape records arrive
  one WRITE at a time) and the cut points are exactly those FastCDC finds on
  the whole stream at once: feeding the same bytes in different piece sizes
  yields the same chunks.
- `FixedChunker`: fixed-size pages for volumes, where chunk n covers bytes
  [n * size, (n + 1) * size) so a block address maps to a chunk by division.

Why a push chunker on top of `FastCDC.cut_buf`: pyfastcdc's own streaming API
(`cut_stream`) *pulls* from a reader, which does not fit a SCSI handler that
is handed one record per command. A cut decided by FastCDC depends only on
the bytes from the chunk's start up to the cut (at most `max_size` bytes), so
a chunk is final once either its cut lies before the end of the buffered data
(the cut was found by the hash, not by running out of data) or it is exactly
`max_size` long. Only the trailing, not-yet-final chunk is carried over to
the next feed. Memory: one buffer of `2 * max_size + max_size`, allocated once.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyfastcdc import FastCDC

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class ChunkerParams:
    """FastCDC size constraints; the defaults are the tape-stream ones.

    Note pyfastcdc's own convention: its real average chunk is about
    `avg_size + min_size` (cut-point skipping), and the accepted ranges are
    min 64 B..1 MiB, avg 256 B..4 MiB, max 1 KiB..16 MiB.

    Why 128 KiB / 512 KiB / 2 MiB (observed mean ~640 KiB) and not the
    1 MiB average of per-file chunkers: a tape stream has no file
    boundaries, so one edited small file dirties the whole chunk around it
    and its neighbours'. Halving the chunk size cut the stored bytes of the
    backup-like benchmark by 16 % (552 → 464 MiB, within 10 % of restic's
    per-file chunking) while packs keep PUTs per GiB unchanged; going to
    64 KiB / 256 KiB saves 12 % more but doubles the per-chunk costs again
    (fsyncs, index rows, GETs on a cold restore). docs/PERFORMANCE.md has
    the measurements. A cartridge pins its parameters in its manifest, so
    changing these defaults only affects cartridges created afterwards.
    """

    min_size: int = 128 * KiB
    avg_size: int = 512 * KiB
    max_size: int = 2 * MiB
    normalized_chunking: int = 1

    def make(self) -> FastCDC:
        return FastCDC(
            self.avg_size,
            min_size=self.min_size,
            max_size=self.max_size,
            normalized_chunking=self.normalized_chunking,  # type: ignore[arg-type]
        )


class StreamChunker:
    """Incremental FastCDC over a stream fed in arbitrary pieces.

    `feed()` returns the chunks that became final; `finish()` returns the
    tail. Returned chunks are independent `bytes` (safe to keep).
    """

    def __init__(self, params: ChunkerParams | None = None) -> None:
        self.params = params or ChunkerParams()
        self._cdc = self.params.make()
        # Scan only once this much is buffered: each scan re-reads the carried
        # tail (< max_size), so waiting for 2 * max_size keeps the re-scan
        # cost at most about half of the bytes fed.
        self._scan_at = 2 * self.params.max_size
        # One buffer allocated once: pieces are copied in at `_n`, chunks are
        # copied out as bytes, and after a scan the carried tail (< max_size)
        # is moved to the front. A growing bytearray with `del buf[:n]`
        # re-allocated and copied the whole buffer several times per scan.
        self._buf = bytearray(self._scan_at + self.params.max_size)
        self._n = 0
        self.offset = 0  # stream offset of the first buffered byte

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes to the stream; return the chunks that are now final."""
        out: list[bytes] = []
        view = memoryview(data).cast("B")
        pos, total = 0, len(view)
        while pos < total:
            # Fill up to the scan threshold (never past the buffer's end).
            take = min(total - pos, self._scan_at - self._n)
            self._buf[self._n : self._n + take] = view[pos : pos + take]
            self._n += take
            pos += take
            if self._n >= self._scan_at:
                out.extend(self._cut(final=False))
        return out

    def finish(self) -> list[bytes]:
        """End of stream: return every remaining chunk and reset."""
        out = list(self._cut(final=True))
        self.offset = 0
        return out

    def _cut(self, *, final: bool) -> list[bytes]:
        n = self._n
        with memoryview(self._buf) as whole, whole[:n] as view:
            spans = self._final_spans(view, final)
            chunks = [bytes(view[a:b]) for a, b in spans]
            consumed = spans[-1][1] if spans else 0
            if consumed:
                whole[: n - consumed] = view[consumed:n]  # memmove of the tail
        self._n = n - consumed
        self.offset += consumed
        return chunks

    def _final_spans(self, view: memoryview, final: bool) -> list[tuple[int, int]]:
        # Kept in its own frame so pyfastcdc's iterator and Chunk objects (which
        # hold views into the buffer) are gone before the buffer is rewritten.
        end = len(view)
        max_size = self.params.max_size
        spans: list[tuple[int, int]] = []
        for c in self._cdc.cut_buf(view):
            stop = c.offset + c.length
            if not final and stop == end and c.length < max_size:
                break  # may still grow: carry it over
            spans.append((c.offset, stop))
        return spans


class FixedChunker:
    """Cut a stream into fixed-size chunks (the last one may be shorter)."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("chunk size must be positive")
        self.size = size
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        self._buf += data
        n = len(self._buf) // self.size * self.size
        out = [bytes(self._buf[i : i + self.size]) for i in range(0, n, self.size)]
        del self._buf[:n]
        return out

    def finish(self) -> list[bytes]:
        out = [bytes(self._buf)] if self._buf else []
        self._buf.clear()
        return out

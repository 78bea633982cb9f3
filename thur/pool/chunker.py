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
the next feed. Memory: one window of `2 * max_size + max_size`, allocated at the
first feed and freed by `finish()`.

Why the window is a memfd and not a bytearray: every byte fed is copied into
the window and every chunk out of it, and a Python-level copy holds the GIL
for the whole memcpy. On two cores with two drives, those copies were over
half of the time the drive threads held the GIL, so the drives took turns
instead of running side by side. `os.pwrite`/`os.pread` on a memfd make the
same copies (through the kernel, at memcpy speed) with the GIL released, and
`pread` hands back a new `bytes` without a second copy. FastCDC scans the
window through an mmap of the same file, also without the GIL.
"""

from __future__ import annotations

import mmap
import os
import weakref
from dataclasses import dataclass

from pyfastcdc import FastCDC

from thur.fsutil import UNLOCKED_COPY_MIN, pwrite_all

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


class _Window:
    """A fixed-size byte window in a memfd: chunks out, and pieces in from 1 MiB, drop the GIL."""

    def __init__(self, size: int) -> None:
        self.fd = os.memfd_create("thur-chunker", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self.map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        # A chunker dropped without close() must not leak its descriptor.
        self._release = weakref.finalize(self, _release, self.map, self.fd)

    def write(self, at: int, data: memoryview) -> None:
        if len(data) < UNLOCKED_COPY_MIN:
            self.map[at : at + len(data)] = data
        else:
            pwrite_all(self.fd, data, at)

    def read(self, start: int, stop: int) -> bytes:
        out = os.pread(self.fd, stop - start, start)
        if len(out) != stop - start:  # cannot happen inside the file; never cut short
            raise OSError(f"chunker window: short read at {start}")
        return out

    def close(self) -> None:
        self._release()


def _release(window: mmap.mmap, fd: int) -> None:
    window.close()
    os.close(fd)


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
        # Pieces are copied in at `_n`, chunks are read out as bytes, and after a
        # scan the carried tail (< max_size) is moved to the front.
        self._window: _Window | None = None
        self._n = 0
        self.offset = 0  # stream offset of the first buffered byte

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes to the stream; return the chunks that are now final."""
        out: list[bytes] = []
        view = memoryview(data).cast("B")
        pos, total = 0, len(view)
        if total and self._window is None:
            self._window = _Window(self._scan_at + self.params.max_size)
        while pos < total:
            # Fill up to the scan threshold (never past the window's end).
            take = min(total - pos, self._scan_at - self._n)
            self._window.write(self._n, view[pos : pos + take])  # type: ignore[union-attr]
            self._n += take
            pos += take
            if self._n >= self._scan_at:
                out.extend(self._cut(final=False))
        return out

    def finish(self) -> list[bytes]:
        """End of stream: return every remaining chunk, reset and free the window."""
        out = self._cut(final=True) if self._window is not None else []
        self.close()
        self.offset = 0
        return out

    def close(self) -> None:
        """Free the window (a later feed makes a new one); buffered bytes are dropped."""
        if self._window is not None:
            self._window.close()
            self._window = None
        self._n = 0

    def _cut(self, *, final: bool) -> list[bytes]:
        n, window = self._n, self._window
        assert window is not None
        with memoryview(window.map) as whole, whole[:n] as view:
            spans = self._final_spans(view, final)
        chunks = [window.read(a, b) for a, b in spans]
        consumed = spans[-1][1] if spans else 0
        if consumed and consumed < n:
            window.map.move(0, consumed, n - consumed)  # the tail, < max_size
        self._n = n - consumed
        self.offset += consumed
        return chunks

    def _final_spans(self, view: memoryview, final: bool) -> list[tuple[int, int]]:
        # Kept in its own frame so pyfastcdc's iterator and Chunk objects (which
        # hold views into the window) are gone before the window is rewritten.
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

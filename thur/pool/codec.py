"""Per-chunk compression.

The codec is recorded with every stored chunk (local chunk file header, pack
chunk table, index entry), so changing the configured codec never breaks
reading old chunks. A chunk that does not shrink is stored raw (`Codec.NONE`).

Codec numbers are part of the on-disk and in-bucket formats: never renumber.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass

import lz4.block
import zstandard

from .errors import ChunkCorrupt


class Codec(enum.IntEnum):
    NONE = 0
    ZSTD = 1
    LZ4 = 2


@dataclass(frozen=True, slots=True)
class CompressionPolicy:
    """What the writer tries; readers accept every codec regardless."""

    codec: Codec = Codec.ZSTD
    zstd_level: int = 3


class Compressor:
    """Compress and decompress chunks; safe to share between threads.

    zstandard's (de)compressor objects are not thread-safe but are worth
    reusing (they own large contexts), so each thread keeps its own.
    """

    def __init__(self, policy: CompressionPolicy | None = None) -> None:
        self.policy = policy or CompressionPolicy()
        self._local = threading.local()

    def compress(self, plain: bytes | memoryview) -> tuple[Codec, bytes]:
        """Return (codec, payload); falls back to NONE when nothing is saved."""
        codec = self.policy.codec
        if codec is Codec.ZSTD:
            payload = self._zstd_c().compress(plain)
        elif codec is Codec.LZ4:
            # Raw lz4 block without a size prefix: the plaintext length is
            # recorded next to the codec everywhere a payload is stored.
            payload = lz4.block.compress(plain, store_size=False)
        else:
            return Codec.NONE, bytes(plain)
        if len(payload) >= len(plain):
            return Codec.NONE, bytes(plain)
        return codec, payload

    def decompress(
        self, chunk_id: bytes, codec: int, payload: bytes | memoryview, plain_len: int
    ) -> bytes:
        """Decode a payload; any decoder failure or size mismatch is ChunkCorrupt."""
        try:
            kind = Codec(codec)
        except ValueError:
            raise ChunkCorrupt(chunk_id, f"unknown codec {codec}") from None
        try:
            if kind is Codec.NONE:
                plain = bytes(payload)
            elif kind is Codec.ZSTD:
                plain = self._zstd_d().decompress(payload, max_output_size=plain_len)
            else:
                plain = lz4.block.decompress(payload, uncompressed_size=plain_len)
        except (zstandard.ZstdError, lz4.block.LZ4BlockError) as e:
            raise ChunkCorrupt(chunk_id, f"{kind.name} decode failed: {e}") from None
        if len(plain) != plain_len:
            raise ChunkCorrupt(chunk_id, f"decoded {len(plain)} bytes, expected {plain_len}")
        return plain

    def _zstd_c(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "zc", None)
        if c is None:
            # write_content_size lets the decoder size its output exactly.
            c = zstandard.ZstdCompressor(level=self.policy.zstd_level, write_content_size=True)
            self._local.zc = c
        return c

    def _zstd_d(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "zd", None)
        if d is None:
            d = zstandard.ZstdDecompressor()
            self._local.zd = d
        return d

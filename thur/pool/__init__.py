"""The local chunk pool: chunk identity, chunking, compression, the warm cache.

Public API (other packages import only these names):

- `chunk_id(data)` — BLAKE3-256 of the plaintext; `CHUNK_ID_LEN`.
- `StreamChunker`, `ChunkerParams` — FastCDC over a pushed stream (tape).
- `FixedChunker` — fixed-size pages (volumes).
- `Codec`, `CompressionPolicy`, `Compressor` — per-chunk zstd / lz4 / none.
- `LocalStore`, `PoolConfig`, `PutResult`, `PoolStats`, `Recovery` — the cache.
- `Encoded` — a chunk as stored (codec, plaintext length, payload).
- `Clock`, `SystemClock`, `ManualClock` — injected time (the last for tests).
- Errors: `PoolError`, `ChunkCorrupt`, `ChunkMissing`, `BackpressureTimeout`,
  `PoolStateError`.
"""

from .chunker import ChunkerParams, FixedChunker, StreamChunker
from .chunkfile import Encoded
from .chunkid import CHUNK_ID_LEN, chunk_id, parse_chunk_id
from .clock import Clock, ManualClock, SystemClock
from .codec import Codec, CompressionPolicy, Compressor
from .errors import BackpressureTimeout, ChunkCorrupt, ChunkMissing, PoolError, PoolStateError
from .store import LocalStore, PoolConfig, PoolStats, PutResult, Recovery

__all__ = [
    "CHUNK_ID_LEN",
    "BackpressureTimeout",
    "ChunkCorrupt",
    "ChunkMissing",
    "ChunkerParams",
    "Clock",
    "Codec",
    "CompressionPolicy",
    "Compressor",
    "Encoded",
    "FixedChunker",
    "LocalStore",
    "ManualClock",
    "PoolConfig",
    "PoolError",
    "PoolStateError",
    "PoolStats",
    "PutResult",
    "Recovery",
    "StreamChunker",
    "SystemClock",
    "chunk_id",
    "parse_chunk_id",
]

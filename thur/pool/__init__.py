"""The local chunk pool: chunk identity, chunking, compression, the warm cache.

Public API (other packages import only these names):

- `chunk_id(data)` — BLAKE3-256 of the plaintext; `CHUNK_ID_LEN`.
- `StreamChunker`, `ChunkerParams` — FastCDC over a pushed stream (tape).
- `FixedChunker` — fixed-size pages (volumes).
- `Codec`, `CompressionPolicy`, `Compressor` — per-chunk zstd / lz4 / none.
- `LocalStore`, `PoolConfig`, `PutResult`, `PoolStats`, `Recovery` — the cache
  (`put`, or `submit` / `put_many` for parallel, group-committed ingest).
- `Encoded` — a chunk as stored (codec, plaintext length, payload).
- `Clock`, `SystemClock`, `ManualClock` — injected time (the last for tests).
- `ChunkOwner` (Protocol), `MarkSet`, `RefGuard`, `LocalSweep`, `sweep_local` —
  liveness and the local half of GC (`thur.cloud.GarbageCollector` runs it).
- Errors: `PoolError`, `ChunkCorrupt`, `ChunkMissing`, `BackpressureTimeout`,
  `PoolStateError`; `as_model_error` maps them to a model's typed errors.
"""

from .chunker import ChunkerParams, FixedChunker, StreamChunker
from .chunkfile import Encoded
from .chunkid import CHUNK_ID_LEN, chunk_id, parse_chunk_id
from .clock import Clock, ManualClock, SystemClock
from .codec import Codec, CompressionPolicy, Compressor
from .errors import (
    BackpressureTimeout,
    ChunkCorrupt,
    ChunkMissing,
    PoolError,
    PoolStateError,
    as_model_error,
)
from .gc import ChunkOwner, LocalSweep, MarkSet, RefGuard, sweep_local
from .recovery import Recovery
from .store import LocalStore, PoolConfig, PoolStats, PutResult

__all__ = [
    "CHUNK_ID_LEN",
    "BackpressureTimeout",
    "ChunkCorrupt",
    "ChunkMissing",
    "ChunkOwner",
    "ChunkerParams",
    "Clock",
    "Codec",
    "CompressionPolicy",
    "Compressor",
    "Encoded",
    "FixedChunker",
    "LocalSweep",
    "LocalStore",
    "ManualClock",
    "MarkSet",
    "PoolConfig",
    "PoolError",
    "PoolStateError",
    "PoolStats",
    "PutResult",
    "Recovery",
    "RefGuard",
    "StreamChunker",
    "SystemClock",
    "as_model_error",
    "chunk_id",
    "parse_chunk_id",
    "sweep_local",
]

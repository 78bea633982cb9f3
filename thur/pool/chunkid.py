"""Chunk identity: the BLAKE3-256 digest of a chunk's plaintext.

Identical bytes from any cartridge or volume get the same id, which is what
makes the pool deduplicate.
"""

from __future__ import annotations

from blake3 import blake3

CHUNK_ID_LEN = 32

# Below this size the cost of spinning up BLAKE3's worker threads outweighs
# the gain; above it (tape chunks are ~1 MiB) multithreading pays.
_THREADED_HASH_MIN = 1 << 20


def chunk_id(data: bytes | bytearray | memoryview) -> bytes:
    """Return the 32-byte BLAKE3 digest of `data`."""
    if len(data) >= _THREADED_HASH_MIN:
        return blake3(data, max_threads=blake3.AUTO).digest()
    return blake3(data).digest()


def parse_chunk_id(text: str) -> bytes:
    """Parse the 64-hex-digit text form of a chunk id."""
    raw = bytes.fromhex(text)
    if len(raw) != CHUNK_ID_LEN:
        raise ValueError(f"chunk id must be {CHUNK_ID_LEN} bytes, got {len(raw)}")
    return raw

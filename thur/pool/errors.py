"""Typed errors of the local chunk pool.

The SCSI layer maps these to sense data in exactly one place (see DESIGN.md);
nothing here knows about SCSI.
"""

from __future__ import annotations

from typing import TypeVar


class PoolError(Exception):
    """Base class of every error the pool raises on purpose."""


class ChunkCorrupt(PoolError):
    """Stored bytes do not hash to the chunk id (or do not decode).

    Raised instead of ever returning wrong bytes.
    """

    def __init__(self, chunk_id: bytes, reason: str) -> None:
        super().__init__(f"chunk {chunk_id.hex()} is corrupt: {reason}")
        self.chunk_id = chunk_id
        self.reason = reason


class ChunkMissing(PoolError):
    """The chunk is not in the local pool (and, at the tier, not in the backend)."""

    def __init__(self, chunk_id: bytes) -> None:
        super().__init__(f"chunk {chunk_id.hex()} is not present")
        self.chunk_id = chunk_id


class BackpressureTimeout(PoolError):
    """A writer waited the configured maximum for cache space and got none.

    The SCSI layer answers NOT READY / LOGICAL UNIT NOT READY, OPERATION IN
    PROGRESS (04/07) so the initiator retries later.
    """

    def __init__(self, needed: int, waited: float) -> None:
        super().__init__(f"no room for {needed} bytes in the pool after waiting {waited:.1f} s")
        self.needed = needed
        self.waited = waited


class PoolStateError(PoolError):
    """The pool's durable state is inconsistent in a way it cannot repair itself."""


E = TypeVar("E", bound=Exception)


def as_model_error(
    e: BaseException,
    base: type[E],
    *,
    backpressure: type[E],
    corrupt: type[E],
    failure: type[E],
) -> E:
    """How a model (tape, volume) turns a pool or disk failure into its own typed
    error: one of its own passes through, a full cache becomes `backpressure`, a
    bad or missing chunk `corrupt`, anything else `failure` (named by its type)."""
    if isinstance(e, base):
        return e
    if isinstance(e, BackpressureTimeout):
        return backpressure(str(e))
    if isinstance(e, (ChunkCorrupt, ChunkMissing)):
        return corrupt(str(e))
    return failure(f"{type(e).__name__}: {e}")

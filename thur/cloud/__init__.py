"""The cloud tier: backends, packs, the pack index, and the tiered pool.

Public API (other packages import only these names):

- `Backend` (Protocol), `ObjectInfo`, `LocalBackend` — object stores;
  `open_backend(kind, options)` builds local / s3 / gcs / azure (the cloud
  SDKs are imported only when that kind is opened).
- `BackendError`, `BackendTransient`, `BackendPermanent`, `NotFound`,
  `AlreadyExists`, `PackCorrupt`, `IndexCorrupt` — typed backend errors;
  `CredentialsRejected`, `BucketMissing`, `PermissionDenied` — the kinds of
  BackendPermanent that `check` explains.
- `RetryPolicy` — exponential backoff for transient errors.
- `TieredPool`, `TierConfig`, `UploadReport` — cache + backend; what the tape
  and volume models use (`put`, `get`, `flush`, `start`, `close`).
- `PackIndex`, `PackEntry`, `SyncReport` — the chunk → pack index.
- `check`, `CheckReport`, `CheckStep` — the backend probe.
- `GarbageCollector`, `GcConfig`, `GcReport` — mark-and-sweep over owners,
  cache and bucket, with repack and dry run.
"""

from .backend import Backend, ObjectInfo
from .check import CheckReport, CheckStep, check
from .errors import (
    AlreadyExists,
    BackendError,
    BackendPermanent,
    BackendTransient,
    BucketMissing,
    CredentialsRejected,
    NotFound,
    PermissionDenied,
)
from .factory import open_backend
from .gc import GarbageCollector, GcConfig, GcReport
from .index import IndexCorrupt, PackIndex, SyncReport
from .local import LocalBackend
from .pack import PackCorrupt, PackEntry
from .retry import RetryPolicy
from .tier import TierConfig, TierCounters, TieredPool, UploadReport

__all__ = [
    "AlreadyExists",
    "Backend",
    "BackendError",
    "BackendPermanent",
    "BackendTransient",
    "BucketMissing",
    "CheckReport",
    "CheckStep",
    "GarbageCollector",
    "GcConfig",
    "GcReport",
    "CredentialsRejected",
    "IndexCorrupt",
    "LocalBackend",
    "NotFound",
    "ObjectInfo",
    "PackCorrupt",
    "PackEntry",
    "PackIndex",
    "PermissionDenied",
    "RetryPolicy",
    "SyncReport",
    "TierConfig",
    "TierCounters",
    "TieredPool",
    "UploadReport",
    "check",
    "open_backend",
]

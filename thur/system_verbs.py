"""The `system` verbs both daemons serve: pool statistics, backend check, GC.

Served by thurvtld (owners: its cartridges) and thurvsad (owners: its volumes)
over the admin socket; `thur/system_cli.py` is the CLI side.

Verbs and their arguments:
    system.stats        {}                       read only
    system.cloud_check  {}                       read only (a probe object is written
                                                 and deleted again; nothing else)
    system.gc           {"dry_run"?: bool}       streams progress; audited (dry runs too)
    iscsi.chap          {}                       read only; passwords never leave

`system.stats` numbers, all in bytes:
- logical: what the owners hold as their clients see it (the sum of the cartridges'
  record bytes, or of the volumes' mapped bytes);
- the bucket (by the local pack index, each distinct chunk once): its plaintext
  (`unique_bytes`) and stored, compressed size;
- dedup ratio = logical / unique, compression ratio = unique / stored in the bucket,
  data reduction = logical / stored. They describe what is in the bucket: data still
  in the upload backlog counts in logical but not yet in unique/stored, and chunks of
  deleted data count as stored until GC removes them;
- the cache (the local pool): used, budget, fill; the upload backlog (pinned bytes);
- traffic since the daemon started (TieredPool counters) and the write path's dedup
  since start (LocalStore counters).

`system.gc` runs `thur.cloud.GarbageCollector` over the daemon's owners. Only one
runs at a time (a second is refused). Its owners must be every owner of the bucket:
two daemons sharing one bucket must not run GC (see thur/cloud/gc.py).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable
from typing import Any

from thur.admin import AdminError, Handler, Progress, bool_arg, read_only, streaming
from thur.cloud import BackendError, GarbageCollector, GcConfig, TieredPool, check
from thur.config import Chap, IscsiConfig
from thur.pool.gc import ChunkOwner

Args = dict[str, Any]


def _ratio(num: int | None, den: int) -> float | None:
    return round(num / den, 4) if num is not None and den > 0 else None


class SystemVerbs:
    """`system.*` over one tiered pool and the daemon's chunk owners."""

    def __init__(
        self,
        tier: TieredPool,
        owners: Callable[[], Iterable[ChunkOwner]],
        logical_bytes: Callable[[], int | None],
        *,
        gc_config: GcConfig | None = None,
    ) -> None:
        self.tier = tier
        self.owners = owners
        self.logical_bytes = logical_bytes
        self.gc_config = gc_config or GcConfig()
        self._gc_lock = threading.Lock()

    def table(self) -> dict[str, Handler]:
        return {
            "system.stats": read_only(self.stats),
            "system.cloud_check": read_only(self.cloud_check),
            "system.gc": streaming(self.gc),
        }

    def stats(self, _args: Args) -> dict[str, Any]:
        pool = self.tier.store.stats()
        bucket = self.tier.index.totals()
        traffic = self.tier.counters()
        logical = self.logical_bytes()
        uploads = {f"{kind}_{outcome}": n for (kind, outcome), n in traffic.uploads.items()}
        c = pool.counters
        return {
            "logical_bytes": logical,
            "unique_bytes": bucket.plain_bytes,
            "stored_bytes": bucket.stored_bytes,
            "dedup_ratio": _ratio(logical, bucket.plain_bytes),
            "compression_ratio": _ratio(bucket.plain_bytes, bucket.stored_bytes),
            "reduction_ratio": _ratio(logical, bucket.stored_bytes),
            "backends": [
                {"name": "cache", "kind": "cache", "chunks": pool.chunks,
                 "stored_bytes": pool.used_bytes, "budget_bytes": pool.budget_bytes},
                {"name": self.tier.backend.name, "kind": "bucket", "chunks": bucket.chunks,
                 "plain_bytes": bucket.plain_bytes, "stored_bytes": bucket.stored_bytes,
                 "packs": bucket.packs, "index_files": bucket.index_files},
            ],
            "cache": {
                "used_bytes": pool.used_bytes,
                "budget_bytes": pool.budget_bytes,
                "fill": _ratio(pool.used_bytes, pool.budget_bytes),
                "chunks": pool.chunks,
            },
            "upload_backlog_bytes": pool.pinned_bytes,
            "since_start": {
                "written_bytes": c.logical_bytes,
                "new_unique_bytes": c.unique_bytes,
                "dedup_hits": c.dedup_hits,
                "evicted_bytes": c.evicted_bytes,
                "uploaded_bytes": traffic.upload_bytes,
                "downloaded_bytes": traffic.download_bytes,
                "uploads": uploads,
                "downloads": dict(traffic.downloads),
                "retries": traffic.retries,
            },
        }

    def cloud_check(self, _args: Args) -> dict[str, Any]:
        report = check(self.tier.backend)
        return {
            "backend": report.backend,
            "ok": report.ok,
            "steps": [{"name": s.name, "ok": s.ok, "message": s.message} for s in report.steps],
        }

    def gc(self, args: Args, progress: Progress) -> dict[str, Any]:
        dry_run = bool_arg(args, "dry_run")
        if not self._gc_lock.acquire(blocking=False):
            raise AdminError("a garbage collection is already running; try again when it ends")
        try:
            config = dataclasses.replace(self.gc_config, dry_run=dry_run)
            collector = GarbageCollector(self.tier, self.owners, config, progress=progress)
            try:
                report = collector.run()
            except BackendError as exc:
                raise AdminError(f"garbage collection stopped: {exc} (nothing referenced "
                                 "was removed; run it again)") from exc
        finally:
            self._gc_lock.release()
        out = dataclasses.asdict(report)
        out["corrupt_packs"] = [p.hex() for p in report.corrupt_packs]
        return out


def chap_settings(iscsi: IscsiConfig) -> dict[str, Any]:
    """The CHAP settings of the target with every password redacted (`iscsi chap`)."""

    def entry(chap: Chap | None) -> dict[str, Any] | None:
        if chap is None:
            return None
        return {"userid": chap.userid, "password": "(set)" if chap.password else "(empty)"}

    return {
        "target_iqn": iscsi.target_iqn,
        "authentication": iscsi.chap is not None,
        "acls": list(iscsi.initiators),
        "demo_mode": not iscsi.initiators,
        "chap": entry(iscsi.chap),
        "mutual_chap": entry(iscsi.mutual_chap),
        "discovery_chap": entry(iscsi.discovery_chap),
        "runtime_change": False,
    }


def system_verbs(
    tier: TieredPool,
    owners: Callable[[], Iterable[ChunkOwner]],
    logical_bytes: Callable[[], int | None],
    *,
    iscsi: IscsiConfig | None = None,
    gc_config: GcConfig | None = None,
) -> dict[str, Handler]:
    """The shared verb table (add it to a daemon's own)."""
    verbs = SystemVerbs(tier, owners, logical_bytes, gc_config=gc_config).table()
    if iscsi is not None:
        settings = chap_settings(iscsi)  # the config file's: fixed while the daemon runs
        verbs["iscsi.chap"] = read_only(lambda _args: settings)
    return verbs

"""Garbage collection of the tiered pool: mark-and-sweep over owners, cache and bucket.

One run (`GarbageCollector.run()`):

1. flush pending uploads (so the current index batch is sealed) and
   `sync_index()`, then snapshot the packs the index knows (an sqlite scratch
   table, with their listed sizes): packs uploaded later are never touched;
2. begin the guard, wait `grace`, mark every owner's ids (see
   thur/pool/gc.py for why this order keeps concurrent writers safe);
3. sweep the local cache: every unmarked chunk that predates the run;
4. classify each snapshot pack by its *live fraction* (bytes of marked
   chunks it serves / pack size): 0 → delete, below `repack_below` → repack,
   else keep. Duplicated or unindexed blobs count as dead;
5. per round of up to `packs_per_round` condemned packs, in this order:
   a. PUT new packs holding the live chunks of the repacked ones (payloads
      copied as they are, each verified against its id first);
   b. PUT new index files naming those packs *and* every surviving pack that
      an index file about to be deleted names;
   c. under the guard's lock: a condemned pack one of whose dead chunks was
      referenced since the plan is *resurrected* (kept); the local index
      learns (b) and forgets the condemned packs and superseded index files
      in one transaction; local copies of chunks with no bucket copy left are
      dropped;
   d. DELETE the superseded index files;
   e. DELETE the condemned packs.

A crash anywhere leaves every referenced chunk readable: before (c) the old
packs and index files are all still there; after (c) the new ones are. At
worst garbage survives until the next run (docs/FORMATS.md has the cases).

`dry_run=True` does steps 1-4 without changing anything and reports what a
real run would free. Limits: one GC per bucket at a time, and the owners
passed in must be every owner of every machine sharing the bucket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from blake3 import blake3

from thur.pool import ChunkCorrupt, Encoded, chunk_id
from thur.pool.gc import ChunkOwner, LocalSweep, MarkSet, sweep_local

from .index import encode_index_file, list_packs
from .pack import PackBuilder, PackEntry, pack_key, parse_pack
from .tier import TieredPool

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GcConfig:
    grace: float = 30.0  # seconds between guarding new references and marking
    repack_below: float = 0.5  # repack a pack whose live fraction is below this
    packs_per_round: int = 32  # condemned packs per commit: bounds memory and redo
    dry_run: bool = False


@dataclass(slots=True)
class GcReport:
    dry_run: bool = False
    owners: int = 0
    ids_marked: int = 0  # ids read from owners (duplicates included)
    local: LocalSweep = field(default_factory=LocalSweep)
    packs_seen: int = 0
    packs_deleted: int = 0  # wholly dead
    packs_repacked: int = 0  # live chunks copied out, then deleted
    packs_resurrected: int = 0  # condemned, then referenced again: kept
    packs_written: int = 0
    index_files_written: int = 0
    index_files_deleted: int = 0
    bytes_copied: int = 0  # live payload bytes moved by repacking
    bucket_bytes_freed: int = 0  # deleted pack bytes minus new pack bytes
    corrupt_packs: list[bytes] = field(default_factory=list)  # not repacked, kept


@dataclass(slots=True)
class _Condemned:
    pack_id: bytes
    size: int
    entries: list[PackEntry]
    live: set[bytes]  # chunk ids to carry over (empty: delete outright)


class GarbageCollector:
    """Mark-and-sweep for one tiered pool. `owners` is called once per run."""

    def __init__(
        self,
        tier: TieredPool,
        owners: Callable[[], Iterable[ChunkOwner]],
        config: GcConfig | None = None,
        *,
        scratch: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.tier = tier
        self.owners = owners
        self.config = config or GcConfig()
        self.scratch = scratch or tier.store.root / "gc"
        # One line per phase and per owner/round: what `thurvtl system gc` streams.
        self.progress = progress or (lambda _line: None)

    def run(self) -> GcReport:
        cfg = self.config
        tier, store = self.tier, self.tier.store
        report = GcReport(dry_run=cfg.dry_run)
        self.scratch.mkdir(parents=True, exist_ok=True)
        marks = MarkSet(self.scratch / "marks.sqlite")
        # With uploads paused every pack in the bucket is indexed when the
        # snapshot is taken, and every pack uploaded later is outside it.
        with tier.uploads_paused():
            if not cfg.dry_run:
                tier.flush()
            tier.sync_index()
            store.guard.begin(marks)
            began = store.seq
            packs = self._snapshot(marks)
        self.progress(f"snapshot: {packs} packs in {tier.backend.name}")
        try:
            if not cfg.dry_run:
                self.progress(f"waiting {cfg.grace:g} s for writes in flight (grace)")
                tier.clock.sleep(cfg.grace)
            owners = list(self.owners())
            for n, owner in enumerate(owners, 1):
                before = report.ids_marked
                report.ids_marked += marks.add(owner.chunk_ids())
                report.owners += 1
                self.progress(f"marked {owner.name} ({n}/{len(owners)}): "
                              f"{report.ids_marked - before} references")
            report.local = sweep_local(store, store.guard, began, dry_run=cfg.dry_run)
            verb = "would remove" if cfg.dry_run else "removed"
            self.progress(f"cache: {verb} {report.local.chunks} chunks "
                          f"({report.local.bytes} bytes)")
            doomed: list[_Condemned] = []
            for c in self._classify(marks, report):
                if cfg.dry_run:
                    continue
                doomed.append(c)
                if len(doomed) >= cfg.packs_per_round:
                    self._round(doomed, report)
                    doomed = []
            if doomed:
                self._round(doomed, report)
            self.progress(f"packs: {report.packs_seen} seen, {report.packs_deleted} "
                          f"{'to delete' if cfg.dry_run else 'deleted'}, "
                          f"{report.packs_repacked} {'to repack' if cfg.dry_run else 'repacked'}")
        finally:
            store.guard.end()
            marks.close()
        return report

    # ---- plan ---------------------------------------------------------------

    def _snapshot(self, marks: MarkSet) -> int:
        known = self.tier.index.known_packs()
        listed = list_packs(self.tier.backend, self._call)
        db = marks.db
        db.execute("CREATE TABLE packs(pack_id BLOB PRIMARY KEY, size INTEGER) WITHOUT ROWID")
        rows = [(p, s) for p, s in listed.items() if p in known]
        db.executemany("INSERT INTO packs VALUES(?, ?)", rows)
        return len(rows)

    def _packs(self, marks: MarkSet) -> Iterator[tuple[bytes, int]]:
        after = b""
        while True:
            rows = marks.db.execute(
                "SELECT pack_id, size FROM packs WHERE pack_id > ? ORDER BY pack_id LIMIT 512",
                (after,),
            ).fetchall()
            if not rows:
                return
            for pid, size in rows:
                yield bytes(pid), size
            after = bytes(rows[-1][0])

    def _classify(self, marks: MarkSet, report: GcReport) -> Iterator[_Condemned]:
        for pid, size in self._packs(marks):
            report.packs_seen += 1
            entries = self.tier.index.entries_of_pack(pid)
            live = marks.marked([e.chunk_id for e in entries])
            live_bytes = sum(e.length for e in entries if e.chunk_id in live)
            if live_bytes >= self.config.repack_below * size:
                continue
            if self.config.dry_run:  # estimates; a real run counts what it did
                report.packs_deleted += live_bytes == 0
                report.packs_repacked += live_bytes > 0
                report.bucket_bytes_freed += size - live_bytes
            yield _Condemned(pid, size, entries, live)

    # ---- one round ------------------------------------------------------------

    def _round(self, doomed: list[_Condemned], report: GcReport) -> None:
        tier, index, backend = self.tier, self.tier.index, self.tier.backend
        new_packs = self._repack(doomed, report)
        # A repack can rebuild a condemned pack byte for byte (same id): keep it.
        written = {g[0].pack_id for g in new_packs}
        doomed = [
            c for c in doomed if c.pack_id not in report.corrupt_packs and c.pack_id not in written
        ]
        ids = {c.pack_id for c in doomed}
        superseded = index.index_files_naming(ids)
        survivors = index.packs_named_by(superseded) - ids
        groups = [index.entries_of_pack(p) for p in sorted(survivors)] + new_packs
        batch = tier.config.index_batch_packs
        files: list[tuple[str, list[PackEntry]]] = []
        for i in range(0, len(groups), batch):
            entries = [e for g in groups[i : i + batch] for e in g]
            key, data = encode_index_file(entries)
            self._call(lambda k=key, d=data: tier.put_once(k, d))
            files.append((key, entries))
            report.index_files_written += 1
        copied = {e.chunk_id for g in new_packs for e in g}
        with tier.store.guard.hold() as marks:
            keep: set[bytes] = set()
            for c in doomed:
                dead = [e.chunk_id for e in c.entries if e.chunk_id not in copied]
                if marks.marked(dead):
                    keep.add(c.pack_id)  # referenced again since the plan
            doomed = [c for c in doomed if c.pack_id not in keep]
            drop_ix = superseded - index.index_files_naming(keep)
            index.rewrite(files, [c.pack_id for c in doomed], drop_ix)
            gone = [e.chunk_id for c in doomed for e in c.entries if e.chunk_id not in index]
            tier.store.discard_many(gone)
        report.packs_resurrected += len(keep)
        self.progress(f"round: {len(doomed)} packs condemned, {len(keep)} kept "
                      f"(referenced again), {report.packs_written} written so far")
        for c in doomed:
            report.bucket_bytes_freed += c.size
            if c.live:
                report.packs_repacked += 1
            else:
                report.packs_deleted += 1
        for key in sorted(drop_ix):
            self._call(lambda k=key: backend.delete(k))
            report.index_files_deleted += 1
        for key in [pack_key(c.pack_id) for c in doomed]:
            self._call(lambda k=key: backend.delete(k))

    def _repack(self, doomed: list[_Condemned], report: GcReport) -> list[list[PackEntry]]:
        """PUT packs holding the live chunks of `doomed`; return their entries."""
        tier = self.tier
        out: list[list[PackEntry]] = []
        builder = PackBuilder()
        for c in doomed:
            if not c.live:
                continue
            key = pack_key(c.pack_id)
            data = self._call(lambda k=key: tier.backend.get(k))
            try:
                if blake3(data, max_threads=blake3.AUTO).digest() != c.pack_id:
                    raise ChunkCorrupt(c.pack_id, "pack bytes do not hash to its name")
                parse_pack(c.pack_id, data)
                blobs = []
                for e in c.entries:
                    if e.chunk_id not in c.live:
                        continue
                    payload = data[e.offset : e.offset + e.length]
                    plain = tier.store.compressor.decompress(
                        e.chunk_id, e.codec, payload, e.plain_len
                    )
                    if chunk_id(plain) != e.chunk_id:
                        raise ChunkCorrupt(e.chunk_id, f"{key}: bytes do not hash to the id")
                    blobs.append((e.chunk_id, Encoded(e.codec, e.plain_len, payload)))
            except Exception as err:  # a bad pack is kept as it is, never half-copied
                log.error("not repacking %s: %s", key, err)
                report.corrupt_packs.append(c.pack_id)
                continue
            for cid, enc in blobs:
                builder.add(cid, enc)
                report.bytes_copied += len(enc.payload)
                if builder.size >= tier.config.pack_target:
                    out.append(self._put_pack(builder, report))
                    builder = PackBuilder()
        if len(builder):
            out.append(self._put_pack(builder, report))
        return out

    def _put_pack(self, builder: PackBuilder, report: GcReport) -> list[PackEntry]:
        pack_id, data, entries = builder.finish()
        self._call(lambda: self.tier.put_once(pack_key(pack_id), data))
        report.packs_written += 1
        report.bucket_bytes_freed -= len(data)
        return entries

    def _call(self, fn: Callable[[], T]) -> T:
        return self.tier.config.retry.call(fn, self.tier.clock.sleep, "gc")

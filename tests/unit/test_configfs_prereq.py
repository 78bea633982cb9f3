"""Prerequisite checks and module loading against a fake host root."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from configfs import (
    HostProbe,
    PrerequisiteError,
    check_prerequisites,
    load_modules,
    load_nvme_modules,
    nvme_psk_hosts,
    nvme_tls_problems,
)
from configfs.prereq import MODULES

REL = "6.12.0-test-amd64"


def host(tmp_path: Path, *, loaded: Sequence[str] = (), dep: Sequence[str] = tuple(MODULES),
         builtin: Sequence[str] = (), mounted: bool = True, fs_configfs: bool = True,
         modules_dir: bool = True, euid: int = 0, modprobe: bool = True,
         runner: list[list[str]] | None = None, fail: dict[str, int] | None = None) -> HostProbe:
    r = tmp_path / "host"
    (r / "proc").mkdir(parents=True)
    mounts = "sysfs /sys sysfs rw 0 0\n"
    if mounted:
        mounts += "configfs /sys/kernel/config configfs rw,relatime 0 0\n"
    (r / "proc" / "mounts").write_text(mounts)
    (r / "proc" / "filesystems").write_text("nodev\tsysfs\n" + ("nodev\tconfigfs\n"
                                                                 if fs_configfs else ""))
    for m in loaded:
        (r / "sys" / "module" / m).mkdir(parents=True)
    if modules_dir:
        md = r / "lib" / "modules" / REL
        md.mkdir(parents=True)
        (md / "modules.dep").write_text("".join(
            f"kernel/drivers/x/{m.replace('_', '-') if m == 'tcm_loop' else m}.ko.xz: \n"
            for m in dep))
        (md / "modules.builtin").write_text("".join(f"kernel/y/{m}.ko\n" for m in builtin))
    calls = runner if runner is not None else []

    def run(argv: Sequence[str]) -> tuple[int, str]:
        calls.append(list(argv))
        rc = (fail or {}).get(argv[-1], 0)
        if rc == 0 and argv[0] == "modprobe":
            (r / "sys" / "module" / argv[1]).mkdir(parents=True, exist_ok=True)
        if rc == 0 and argv[0] == "mount":
            with open(r / "proc" / "mounts", "a") as f:
                f.write("configfs /sys/kernel/config configfs rw 0 0\n")
        return rc, "modprobe: FATAL: Module not found" if rc else ""

    return HostProbe(root=r, release=REL, euid=euid, run=run,
                     which=lambda name: "/usr/sbin/modprobe" if modprobe else None)


def test_all_good(tmp_path: Path) -> None:
    assert check_prerequisites(host(tmp_path)) == []


def test_not_root(tmp_path: Path) -> None:
    (problem,) = check_prerequisites(host(tmp_path, euid=1000))
    assert "not running as root" in problem


def test_configfs_missing_entirely(tmp_path: Path) -> None:
    (problem,) = check_prerequisites(host(tmp_path, mounted=False, fs_configfs=False))
    assert "configfs is not mounted at /sys/kernel/config" in problem
    assert "CONFIG_CONFIGFS_FS" in problem
    # unmounted but supported is fine: load_modules() mounts it
    assert check_prerequisites(host(tmp_path / "b", mounted=False)) == []


def test_missing_modules_are_named(tmp_path: Path) -> None:
    problems = check_prerequisites(host(tmp_path, dep=["target_core_mod", "iscsi_target_mod",
                                                       "uio"]))
    assert len(problems) == 2
    assert problems[0].startswith("kernel module target_core_user (TCMU")
    assert problems[1].startswith("kernel module tcm_loop (the LIO loopback")
    assert REL in problems[0]


def test_loaded_or_builtin_count_as_present(tmp_path: Path) -> None:
    probe = host(tmp_path, dep=[], loaded=["target_core_mod", "target_core_user",
                                           "iscsi_target_mod", "tcm_loop"], builtin=["uio"])
    assert check_prerequisites(probe) == []


def test_no_modules_dir_for_running_kernel(tmp_path: Path) -> None:
    (problem,) = check_prerequisites(host(tmp_path, modules_dir=False))
    assert f"/lib/modules/{REL} does not exist" in problem
    assert "target_core_user" in problem and "reboot" in problem


def test_no_modprobe(tmp_path: Path) -> None:
    (problem,) = check_prerequisites(host(tmp_path, modprobe=False))
    assert "modprobe is not on PATH" in problem and "kmod" in problem


def test_load_modules_mounts_and_loads(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    probe = host(tmp_path, mounted=False, loaded=["uio"], runner=calls)
    (probe.root / "sys" / "kernel" / "config" / "target").mkdir(parents=True)
    (probe.root / "sys" / "class" / "uio").mkdir(parents=True)
    load_modules(probe)
    assert calls[0] == ["modprobe", "configfs"]
    assert calls[1] == ["mount", "-t", "configfs", "configfs", "/sys/kernel/config"]
    assert calls[2:] == [["modprobe", m] for m in MODULES if m != "uio"]


def test_load_modules_reports_failures(tmp_path: Path) -> None:
    probe = host(tmp_path, fail={"tcm_loop": 1})
    (probe.root / "sys" / "kernel" / "config" / "target").mkdir(parents=True)
    (probe.root / "sys" / "class" / "uio").mkdir(parents=True)
    with pytest.raises(PrerequisiteError) as exc:
        load_modules(probe)
    assert exc.value.problems == [
        "modprobe tcm_loop failed (exit 1): modprobe: FATAL: Module not found; see dmesg"]
    with pytest.raises(PrerequisiteError, match="not running as root"):
        load_modules(host(tmp_path / "b", euid=1))


def test_load_modules_checks_result(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError) as exc:
        load_modules(host(tmp_path))
    assert "/sys/kernel/config/target is missing" in exc.value.problems[0]
    assert "/sys/class/uio is missing" in exc.value.problems[1]


# --- NVMe/TCP ---------------------------------------------------------------------

NVME = ("nvmet", "nvmet_tcp", "tls", "nvme_keyring")


def test_nvme_modules_loaded_then_nvmet_dir_checked(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    probe = host(tmp_path, dep=(*MODULES, *NVME), runner=calls)
    with pytest.raises(PrerequisiteError, match="nvmet is missing although"):
        load_nvme_modules(probe)
    assert calls == [["modprobe", "nvmet"], ["modprobe", "nvmet_tcp"]]
    (probe.root / "sys" / "kernel" / "config" / "nvmet").mkdir(parents=True)
    calls.clear()
    load_nvme_modules(probe, tls=True)
    assert calls == [["modprobe", "tls"], ["modprobe", "nvme_keyring"]]


def test_nvme_module_missing_from_the_kernel(tmp_path: Path) -> None:
    probe = host(tmp_path, dep=(*MODULES, "nvmet"))
    with pytest.raises(PrerequisiteError, match="nvmet_tcp .*built without it"):
        load_nvme_modules(probe)


def tls_host(tmp_path: Path, *, config: str | None = "CONFIG_NVME_TARGET_TCP_TLS=y\n",
             keyring: bool = True, tlshd: bool = True) -> HostProbe:
    probe = host(tmp_path)
    r = probe.root
    if config is not None:
        (r / "boot").mkdir()
        (r / "boot" / f"config-{REL}").write_text(config)
    keys = "0fb3397c I--Q---     2 perm 1f3f0000     0 65534 keyring   _uid.0: empty\n"
    if keyring:
        keys += "2d1a6c1f I------     1 perm 3f010000     0     0 keyring   .nvme: empty\n"
    (r / "proc" / "keys").write_text(keys)
    for pid, comm in ((1, "init"), (77, "tlshd" if tlshd else "sshd")):
        (r / "proc" / str(pid)).mkdir()
        (r / "proc" / str(pid) / "comm").write_text(comm + "\n")
    return probe


def test_tls_ready(tmp_path: Path) -> None:
    assert nvme_tls_problems(tls_host(tmp_path)) == []
    # no /boot/config: the kernel's own answer comes when the port is configured
    assert nvme_tls_problems(tls_host(tmp_path / "b", config=None)) == []


def test_tls_refusals_say_what_is_missing(tmp_path: Path) -> None:
    problems = nvme_tls_problems(tls_host(tmp_path, config="CONFIG_TLS=m\n", keyring=False,
                                          tlshd=False))
    assert len(problems) == 3
    assert "lacks CONFIG_NVME_TARGET_TCP_TLS" in problems[0]
    assert ".nvme keyring is missing" in problems[1]
    assert "tlshd is not running" in problems[2] and "ktls-utils" in problems[2]


def test_psk_hosts_read_from_the_keyring(tmp_path: Path) -> None:
    probe = tls_host(tmp_path)
    sub, host1 = "nqn.2026-11.io.thur:vsa", "nqn.2014-08.org.nvmexpress:uuid:662dfe0c"
    # as the test VM showed them after `nvme gen-tls-key --insert`
    with open(probe.root / "proc" / "keys", "a") as f:
        f.write(f"13e9cdf6 I--Q---     1 perm 3b010000     0     0 psk       NVMe0R01 "
                f"{host1} {sub}: 32\n"
                f"13e9cdf7 I--Q---     1 perm 3b010000     0     0 psk       NVMe1R02 "
                f"nqn.2026-11.io.other:h nqn.2026-11.io.other:s abcdef: 48\n")
    assert nvme_psk_hosts(sub, probe) == {host1}
    assert nvme_psk_hosts("nqn.2026-11.io.thur:none", probe) == set()

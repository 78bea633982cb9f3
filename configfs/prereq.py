"""Host prerequisites for LIO + TCMU, reported as actionable sentences.

All host facts come from a ``HostProbe`` whose filesystem root, kernel release, euid
and command runner are injectable, so every message is unit-tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PrerequisiteError

CONFIGFS_MOUNT = "/sys/kernel/config"

# module -> what it is for (said in the message, so the admin knows what breaks)
MODULES: dict[str, str] = {
    "target_core_mod": "the LIO SCSI target core",
    "target_core_user": "TCMU userspace backstores (our tape/changer/disk devices)",
    "iscsi_target_mod": "the LIO iSCSI target",
    "tcm_loop": "the LIO loopback fabric (local /dev/sdX, /dev/nstN)",
    "uio": "userspace I/O, through which TCMU hands commands to our handler",
}

NVME_MODULES: dict[str, str] = {
    "nvmet": "the NVMe over Fabrics target",
    "nvmet_tcp": "the NVMe/TCP target transport",
}
# Only for TLS: the kernel's TLS record layer and the .nvme keyring holding the PSKs.
NVME_TLS_MODULES: dict[str, str] = {
    "tls": "kernel TLS (CONFIG_TLS)",
    "nvme_keyring": "the NVMe key ring (CONFIG_NVME_KEYRING)",
}

Runner = Callable[[Sequence[str]], "tuple[int, str]"]


def _run(argv: Sequence[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        return 127, str(exc)
    return done.returncode, (done.stderr or done.stdout).strip()


def _norm(module: str) -> str:
    return module.replace("-", "_")


@dataclass
class HostProbe:
    root: Path = Path("/")
    release: str = field(default_factory=lambda: os.uname().release)
    euid: int = field(default_factory=os.geteuid)
    run: Runner = _run
    which: Callable[[str], str | None] = shutil.which

    def _p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def configfs_mounted(self) -> bool:
        try:
            mounts = self._p("/proc/mounts").read_text()
        except OSError:
            return False
        return any(line.split()[1:3] == [CONFIGFS_MOUNT, "configfs"]
                   for line in mounts.splitlines() if len(line.split()) >= 3)

    def configfs_supported(self) -> bool:
        try:
            if "configfs" in self._p("/proc/filesystems").read_text().split():
                return True
        except OSError:
            pass
        return self.module_available("configfs")

    def module_loaded(self, name: str) -> bool:
        return self._p(f"/sys/module/{_norm(name)}").is_dir()

    @property
    def modules_dir(self) -> Path:
        return self._p(f"/lib/modules/{self.release}")

    def _module_names(self, listing: str) -> set[str]:
        names: set[str] = set()
        try:
            text = (self.modules_dir / listing).read_text()
        except OSError:
            return names
        for line in text.splitlines():
            path = line.split(":", 1)[0].strip()
            if path:
                base = path.rsplit("/", 1)[-1]
                names.add(_norm(base.split(".ko", 1)[0]))
        return names

    def module_builtin(self, name: str) -> bool:
        return _norm(name) in self._module_names("modules.builtin")

    def module_available(self, name: str) -> bool:
        return self.module_builtin(name) or _norm(name) in self._module_names("modules.dep")

    def running(self, comm: str) -> bool:
        """A process whose command name is ``comm`` runs (any user)."""
        proc = self._p("/proc")
        try:
            entries = [d for d in proc.iterdir() if d.name.isdigit()]
        except OSError:
            return False
        for d in entries:
            try:
                if (d / "comm").read_text().strip() == comm:
                    return True
            except OSError:
                continue
        return False

    def kernel_config(self, option: str) -> str | None:
        """``y``/``m``/``n`` from /boot/config-<release>; None when that file is absent."""
        try:
            text = self._p(f"/boot/config-{self.release}").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(f"{option}="):
                return line.split("=", 1)[1].strip()
        return "n"


def check_prerequisites(probe: HostProbe | None = None) -> list[str]:
    """Everything that stops Thur from configuring LIO here; empty when all is well.

    A module that is not loaded but can be loaded is not a problem (load_modules()
    loads it); neither is an unmounted configfs the kernel supports.
    """
    p = probe or HostProbe()
    problems: list[str] = []
    if p.euid != 0:
        problems.append("not running as root: loading modules, mounting configfs and "
                        "writing /sys/kernel/config need root (CAP_SYS_ADMIN); start the "
                        "daemon as root")
    if not p.configfs_mounted() and not p.configfs_supported():
        problems.append(f"configfs is not mounted at {CONFIGFS_MOUNT} and the running kernel "
                        f"{p.release} cannot provide it (no 'configfs' in /proc/filesystems, "
                        "no configfs module): boot a kernel built with CONFIG_CONFIGFS_FS")
    missing = [m for m in MODULES if not p.module_loaded(m) and not p.module_available(m)]
    if missing and not p.modules_dir.is_dir():
        problems.append(f"{p.modules_dir} does not exist, so kernel modules "
                        f"{', '.join(missing)} cannot be loaded: install the modules for the "
                        f"running kernel {p.release} (Debian: the matching linux-image "
                        "package) or reboot into the kernel whose modules are installed")
    else:
        for m in missing:
            problems.append(f"kernel module {m} ({MODULES[m]}) is not loaded and not in "
                            f"{p.modules_dir}/modules.dep or modules.builtin: install the "
                            f"full modules package of kernel {p.release} (Debian: "
                            "linux-image-<flavour>; some cloud kernels leave LIO out)")
    unloaded = [m for m in MODULES if not p.module_loaded(m) and not p.module_builtin(m)]
    if unloaded and p.which("modprobe") is None:
        problems.append(f"modprobe is not on PATH but {', '.join(unloaded)} must be loaded: "
                        "install kmod")
    return problems


def load_modules(probe: HostProbe | None = None) -> None:
    """Mount configfs and load the modules; raise PrerequisiteError naming what failed."""
    p = probe or HostProbe()
    problems = check_prerequisites(p)
    if problems:
        raise PrerequisiteError(problems)
    if not p.configfs_mounted():
        if not p.module_loaded("configfs") and not p.module_builtin("configfs"):
            p.run(["modprobe", "configfs"])  # usually built in; mount reports failure
        rc, err = p.run(["mount", "-t", "configfs", "configfs", CONFIGFS_MOUNT])
        if rc != 0 and not p.configfs_mounted():
            problems.append(f"mount -t configfs configfs {CONFIGFS_MOUNT} failed "
                            f"(exit {rc}): {err or 'no message'}")
    for m in MODULES:
        if p.module_loaded(m) or p.module_builtin(m):
            continue
        rc, err = p.run(["modprobe", m])
        if rc != 0:
            problems.append(f"modprobe {m} failed (exit {rc}): {err or 'no message'}; "
                            "see dmesg")
    if not problems:
        if not p._p(f"{CONFIGFS_MOUNT}/target").is_dir():
            problems.append(f"{CONFIGFS_MOUNT}/target is missing although target_core_mod "
                            "is loaded: is configfs mounted somewhere else? see dmesg")
        if not p._p("/sys/class/uio").is_dir():
            problems.append("/sys/class/uio is missing although uio is loaded; see dmesg")
    if problems:
        raise PrerequisiteError(problems)


def _load(p: HostProbe, modules: dict[str, str], problems: list[str]) -> None:
    for m, what in modules.items():
        if p.module_loaded(m) or p.module_builtin(m):
            continue
        if not p.module_available(m):
            problems.append(f"kernel module {m} ({what}) is not in {p.modules_dir}: the "
                            f"running kernel {p.release} was built without it")
            continue
        rc, err = p.run(["modprobe", m])
        if rc != 0:
            problems.append(f"modprobe {m} ({what}) failed (exit {rc}): "
                            f"{err or 'no message'}; see dmesg")


def load_nvme_modules(probe: HostProbe | None = None, *, tls: bool = False) -> None:
    """Load nvmet and nvmet_tcp (and, for TLS, tls and nvme_keyring); raise
    PrerequisiteError naming what failed. Call after load_modules()."""
    p = probe or HostProbe()
    problems: list[str] = []
    _load(p, NVME_MODULES, problems)
    if tls:
        _load(p, NVME_TLS_MODULES, problems)
    if not problems and not p._p(f"{CONFIGFS_MOUNT}/nvmet").is_dir():
        problems.append(f"{CONFIGFS_MOUNT}/nvmet is missing although nvmet is loaded; "
                        "see dmesg")
    if problems:
        raise PrerequisiteError(problems)


def nvme_tls_problems(probe: HostProbe | None = None) -> list[str]:
    """Why NVMe/TCP with TLS cannot work here; empty when it can. Checked before
    anything is configured, so a TLS port is never silently served without TLS."""
    p = probe or HostProbe()
    problems: list[str] = []
    option = p.kernel_config("CONFIG_NVME_TARGET_TCP_TLS")
    if option is not None and option != "y":
        problems.append(f"tls requested but kernel {p.release} lacks "
                        "CONFIG_NVME_TARGET_TCP_TLS (nvmet cannot do TLS; kernel >= 6.7 "
                        "built with it is needed)")
    try:
        keys = p._p("/proc/keys").read_text()
    except OSError:
        keys = ""
    # A line of /proc/keys: "<id> <flags> <usage> <timeout> <perm> <uid> <gid> keyring .nvme: ..."
    if not any(" keyring " in line and " .nvme:" in line for line in keys.splitlines()):
        problems.append("tls requested but the kernel's .nvme keyring is missing (load "
                        "nvme_keyring; kernel needs CONFIG_NVME_KEYRING): the TLS PSKs "
                        "live there")
    if not p.running("tlshd"):
        problems.append("tls requested but tlshd is not running: the kernel hands TLS "
                        "handshakes to it (Debian: apt install ktls-utils; systemctl "
                        "enable --now tlshd)")
    return problems


def nvme_psk_hosts(subsystem_nqn: str, probe: HostProbe | None = None) -> set[str]:
    """Host NQNs with a TLS PSK for ``subsystem_nqn`` in the .nvme keyring, from the
    key descriptions in /proc/keys ("NVMe<v>R<hh> <hostnqn> <subnqn>[ <digest>]", as
    `nvme gen-tls-key --insert` and `nvme check-tls-key --insert` make them)."""
    p = probe or HostProbe()
    try:
        lines = p._p("/proc/keys").read_text().splitlines()
    except OSError:
        return set()
    hosts: set[str] = set()
    for line in lines:
        fields = line.split()
        # id flags usage timeout perm uid gid type description...: payload
        if len(fields) < 11 or fields[7] != "psk" or not fields[8].startswith("NVMe"):
            continue
        if fields[10].rstrip(":") == subsystem_nqn:
            hosts.add(fields[9])
    return hosts

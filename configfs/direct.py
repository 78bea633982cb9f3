"""Direct configfs writes, for what rtslib-fb cannot do safely for us.

- User backstores. rtslib's UserBackedStorageObject instantiates RTSRoot() while
  creating (to replay APTPL) and while deleting (to find LUNs); RTSRoot() rewrites
  target/dbroot to /etc/target, and once devices exist that write fails and rtslib
  raises when /etc/target is absent, deleting the half-made device. It also keeps a
  process-global index cache and a lock file under /var/run. So we create, configure
  and remove user backstores here: mkdir, control options, enable, serial, attribs.
- target/dbroot, which must point at our data_dir before the first device exists.
- Removal of the objects we created, one rmdir at a time. rtslib's TPG/Target delete
  is recursive and would also remove children other tools added inside our objects;
  configfs rmdir refuses a non-empty directory, which is exactly the guarantee we want.

All I/O goes through ``KernelFs`` so tests can run these against a temp dir.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .control import LIVE_ATTRIBUTES, parse_aptpl
from .errors import DbRootError, ExecutionError
from .paths import ConfigfsPaths, Kind


class KernelFs:
    """The handful of filesystem operations done on configfs (overridable in tests)."""

    def write(self, path: Path, value: str) -> None:
        # configfs attributes take one write(2) per value; no O_CREAT semantics needed.
        with open(path, "w") as f:
            f.write(value)

    def read(self, path: Path) -> str:
        with open(path) as f:
            return f.read()

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def symlink(self, target: Path, link: Path) -> None:
        os.symlink(target, link)


_HBA_RACE_RETRIES = 3


def _err(what: str, path: Path, exc: OSError) -> ExecutionError:
    return ExecutionError(f"{what} {path}: {exc.strerror or exc}")


# -- user backstores ---------------------------------------------------------------------

def allocate_hba(paths: ConfigfsPaths) -> int:
    """Lowest index no core/<plugin>_<N> uses. One hba per backstore (as rtslib does),
    and indexes unique across plugins so rtslib-based tools never collide with ours."""
    used: set[int] = set()
    if paths.core.is_dir():
        for d in paths.core.iterdir():
            prefix, _, num = d.name.rpartition("_")
            if prefix and num.isdigit():
                used.add(int(num))
    n = 0
    while n in used:
        n += 1
    return n


def create_user_backstore(fs: KernelFs, paths: ConfigfsPaths, hba: int, name: str,
                          create: Mapping[str, Any], live: Mapping[str, Any],
                          db_root: Path | None) -> Path:
    """Create and configure core/user_<hba>/<name> in the order the kernel requires:
    control options -> enable -> unit serial -> APTPL replay -> attributes; all of it
    before any LUN links the device (serial, APTPL and cmd_time_out refuse after)."""
    hba_dir = paths.core / f"user_{hba}"
    dev = hba_dir / name
    # thurvtld and thurvsad start side by side and may pick the same free hba
    # index: the one whose mkdir loses shares the hba (an hba holds any number
    # of devices), and a device mkdir that finds the hba just removed (the other
    # daemon's last device went) makes it again.
    for attempt in range(_HBA_RACE_RETRIES):
        try:
            fs.mkdir(hba_dir)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _err("cannot create TCMU hba", hba_dir, exc) from exc
        try:
            fs.mkdir(dev)
            break
        except FileNotFoundError as exc:
            if attempt + 1 == _HBA_RACE_RETRIES:
                raise _err("cannot create user backstore", dev, exc) from exc
        except OSError as exc:
            raise _err("cannot create user backstore", dev, exc) from exc
    for opt in create["control"]:
        try:
            fs.write(dev / "control", opt)
        except OSError as exc:
            raise ExecutionError(f"kernel rejected control option {opt!r} for {dev}: "
                                 f"{exc.strerror or exc} (kernel too old for it?)") from exc
    _write(fs, dev / "enable", "1", "cannot enable")
    serial = str(create["wwn_serial"])
    _write(fs, dev / "wwn" / "vpd_unit_serial", serial, "cannot set unit serial on")
    if db_root is not None:
        replay_aptpl(fs, dev, db_root, serial)
    _write(fs, dev / "attrib" / "cmd_time_out", str(create["cmd_time_out"]),
           "cannot set cmd_time_out on")
    update_user_backstore(fs, dev, live)
    return dev


def update_user_backstore(fs: KernelFs, dev: Path, live: Mapping[str, Any]) -> None:
    for attr in LIVE_ATTRIBUTES:
        _write(fs, dev / "attrib" / attr, str(live[attr]), f"cannot set {attr} on")


def replay_aptpl(fs: KernelFs, dev: Path, db_root: Path, serial: str) -> int:
    """Feed the APTPL registrations LIO saved for this unit serial back to the kernel.
    Returns how many were replayed."""
    try:
        text = (db_root / "pr" / f"aptpl_{serial}").read_text()
    except FileNotFoundError:
        return 0
    regs = parse_aptpl(text)
    for line in regs:
        _write(fs, dev / "pr" / "res_aptpl_metadata", line, "cannot replay APTPL into")
    return len(regs)


def delete_user_backstore(fs: KernelFs, paths: ConfigfsPaths, hba: int, name: str) -> None:
    """rmdir the device, then its hba if no other device lives there. Gone is fine."""
    hba_dir = paths.core / f"user_{hba}"
    _rmdir(fs, hba_dir / name, "user backstore (still exported by a LUN?)")
    try:
        others = [d for d in hba_dir.iterdir() if d.is_dir()]
    except FileNotFoundError:
        return
    if not others:
        # Another daemon may have put a device in it since we looked: theirs now.
        _rmdir(fs, hba_dir, "TCMU hba", in_use_ok=True)


def _write(fs: KernelFs, path: Path, value: str, what: str) -> None:
    try:
        fs.write(path, value)
    except OSError as exc:
        raise _err(what, path, exc) from exc


def _rmdir(fs: KernelFs, path: Path, what: str, *, in_use_ok: bool = False) -> None:
    """rmdir; gone is fine, and so is in use (not empty, busy) when `in_use_ok`."""
    try:
        fs.rmdir(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        if in_use_ok and exc.errno in (errno.ENOTEMPTY, errno.EBUSY):
            return
        raise _err(f"cannot remove {what}", path, exc) from exc


# -- removing fabric objects -------------------------------------------------------------

_CHILD_GROUPS = {
    Kind.ISCSI_TARGET: ("",), Kind.LOOP_TARGET: ("",),
    Kind.ISCSI_TPG: ("lun", "np", "acls"), Kind.LOOP_TPG: ("lun",),
    Kind.ISCSI_ACL: ("",),
}


def remove_object(fs: KernelFs, kind: Kind, path: Path) -> None:
    """Remove one fabric object we created; an already-gone object is fine.

    LUNs and mapped LUNs hold one symlink (to the backstore / to the TPG LUN) that
    must be unlinked before the rmdir. An iSCSI TPG is disabled first so its sessions
    end before its LUNs vanish under them. A container still holding children we did
    not create is left in place, and the error names those children.
    """
    if not path.is_dir():
        return
    if kind in (Kind.ISCSI_LUN, Kind.LOOP_LUN, Kind.ISCSI_MAPPED_LUN):
        for entry in path.iterdir():
            if entry.is_symlink():
                try:
                    fs.unlink(entry)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise _err("cannot unlink", entry, exc) from exc
    if kind is Kind.ISCSI_TPG and (path / "enable").is_file():
        _write(fs, path / "enable", "0", "cannot disable TPG")
    try:
        fs.rmdir(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EBUSY):
            kids = foreign_children(kind, path)
            if kids:
                raise ExecutionError(f"left {path} in place: it holds objects we did not "
                                     f"create: {', '.join(kids)}") from exc
        raise _err("cannot remove", path, exc) from exc


def foreign_children(kind: Kind, path: Path) -> list[str]:
    """Child objects (not configfs default groups) still inside a container."""
    kids: list[str] = []
    for group in _CHILD_GROUPS.get(kind, ()):
        base = path / group if group else path
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if not d.is_dir():
                continue
            if kind in (Kind.ISCSI_TARGET, Kind.LOOP_TARGET) and not d.name.startswith("tpgt_"):
                continue
            if kind is Kind.ISCSI_ACL and not d.name.startswith("lun_"):
                continue
            kids.append(str(d.relative_to(path)))
    return kids


# -- db_root -----------------------------------------------------------------------------


def dbroot_value(path: Path | str) -> str:
    """What to write into target/dbroot. The newline matters: the kernel's store
    strncpy()s only the bytes written into its buffer, and copies the terminator only
    when a trailing newline was replaced by it. Without one, a shorter path keeps the
    tail of the previous value ('/tmp/d/lio' over '/etc/target' reads '/tmp/d/liot')."""
    return f"{path}\n"

@dataclass(frozen=True, slots=True)
class DbRootResult:
    previous: str | None = None  # set when we changed it (teardown restores it)
    warning: str | None = None


def ensure_db_root(fs: KernelFs, paths: ConfigfsPaths, db_root: Path,
                   allow_foreign: bool = False) -> DbRootResult:
    """Point LIO's db_root at ``db_root`` (creating its pr/ and alua/ subdirs).

    The kernel accepts a new value only while no device exists and only for an existing
    directory; PR OUT fails with NOT READY without pr/. If another tool's devices pin a
    different db_root we raise, unless ``allow_foreign`` (then a warning is returned).
    """
    for sub in ("pr", "alua"):
        (db_root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    if not paths.dbroot.exists():
        return DbRootResult(warning=f"{paths.dbroot} does not exist (kernel too old?): "
                                    "persistent reservations will not be persisted")
    current = fs.read(paths.dbroot).strip()
    if current and os.path.normpath(current) == os.path.normpath(db_root):
        return DbRootResult()
    try:
        fs.write(paths.dbroot, dbroot_value(db_root))
    except OSError as exc:
        devices = sorted(f"{d.parent.name}/{d.name}" for d in paths.core.glob("*_*/*")
                         if d.is_dir())
        msg = (f"LIO db_root is {current!r} and the kernel refused {str(db_root)!r} "
               f"({exc.strerror or exc}). It can only change while no backstore exists; "
               f"present: {', '.join(devices) or 'none'}. Persistent reservations would "
               f"be kept under {current!r}. Remove those backstores, or set Thur's db_root "
               f"to {current!r}.")
        if allow_foreign:
            return DbRootResult(warning=msg)
        raise DbRootError(msg) from exc
    return DbRootResult(previous=current or None)


def restore_db_root(fs: KernelFs, paths: ConfigfsPaths, previous: str,
                    ours: Path) -> str | None:
    """Best effort: give db_root back once our devices are gone. Returns a warning."""
    try:
        current = fs.read(paths.dbroot).strip()
        if os.path.normpath(current) != os.path.normpath(ours):
            return None  # someone else changed it since; leave theirs alone
        if any(d.is_dir() for d in paths.core.glob("*_*/*")):
            return None  # another daemon's backstores still use it (a shared db_root)
        fs.write(paths.dbroot, dbroot_value(previous))
    except OSError as exc:
        return f"could not restore LIO db_root to {previous!r}: {exc.strerror or exc}"
    return None

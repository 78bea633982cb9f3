"""Reattaching a restarted handler to TCMU devices that stayed exported.

After kill -9 or an in-place upgrade the LIO objects remain and initiators stay
logged in; only the process serving the ring is new. The sequence (what tcmu-runner
does, and what the daemon must do per device):

1. ``ref = find_user_backstore(name, ledger=ledger)`` — where the device is, and the
   uio name it must match (``/sys/class/uio/uioN/name`` =
   ``tcm-user/<hba>/<name>/<dev_config>``); ``find_uio(ref)`` gives ``uioN``.
2. ``block_dev(ref, True)`` — the kernel stops putting new commands on the ring (they
   queue in LIO), so nothing races with the reset.
3. ``reset_ring(ref, 2)`` — the kernel completes every command still on the ring with
   CHECK CONDITION and empties it. Mode 2, not 1: mode 1 would let initiators retry
   blindly, and a retried tape WRITE duplicates a record. The engine must report
   position lost for the tape (the initiator has to re-locate).
4. The handler opens /dev/uioN, mmaps map0, resumes from the mailbox's cmd_tail.
5. ``block_dev(ref, False)`` — queued commands flow again.

``prepare_reattach`` does 2-3, ``finish_reattach`` does 5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .control import parse_info
from .direct import KernelFs
from .errors import BackstoreNotFound, ExecutionError
from .ledger import Ledger
from .paths import DEFAULT_ROOT, ConfigfsPaths, Kind, ObjKey

SYS_CLASS_UIO = Path("/sys/class/uio")
RESET_RING_MODES = (1, 2)  # 1: requeue (initiator retries), 2: fail with CHECK CONDITION


@dataclass(frozen=True, slots=True)
class BackstoreRef:
    """Where a user backstore lives and how its uio device is named."""

    name: str
    hba: int
    path: Path
    dev_config: str

    @property
    def uio_name(self) -> str:
        return f"tcm-user/{self.hba}/{self.name}/{self.dev_config}"


def read_dev_config(path: Path, fs: KernelFs | None = None) -> str | None:
    fs = fs or KernelFs()
    try:
        value = parse_info(fs.read(path / "info")).get("Config")
    except OSError:
        value = None
    if value is None or value == "NULL":
        try:
            value = fs.read(path / "attrib" / "dev_config").strip() or None
        except OSError:
            value = None
    return value


def find_user_backstore(name: str, *, ledger: Ledger | None = None,
                        dev_config: str | None = None, root: Path = DEFAULT_ROOT,
                        fs: KernelFs | None = None) -> BackstoreRef:
    """Find an existing user backstore by name.

    With a ledger the recorded hba index is authoritative. Without one (or when the
    ledger does not list it) every core/user_*/<name> is considered and ``dev_config``
    (ours look like ``thur/...``) narrows the match; other tools' devices may share a
    name, so an ambiguous match is an error rather than a guess.
    """
    paths = ConfigfsPaths(Path(root))
    candidates: list[tuple[int, Path]] = []
    rec = ledger.get(ObjKey(Kind.BACKSTORE, (name,))) if ledger is not None else None
    if rec is not None and rec.hba is not None:
        candidates.append((rec.hba, paths.user_backstore(rec.hba, name)))
    elif paths.core.is_dir():
        for d in sorted(paths.core.glob(f"user_*/{name}")):
            num = d.parent.name.removeprefix("user_")
            if num.isdigit():
                candidates.append((int(num), d))
    found: list[BackstoreRef] = []
    for hba, path in candidates:
        if not path.is_dir():
            continue
        config = read_dev_config(path, fs)
        if config is None or (dev_config is not None and config != dev_config):
            continue
        found.append(BackstoreRef(name, hba, path, config))
    if not found:
        where = f" with dev_config {dev_config!r}" if dev_config else ""
        raise BackstoreNotFound(f"no user backstore {name!r}{where} under {paths.core}")
    if len(found) > 1:
        raise BackstoreNotFound(f"user backstore {name!r} is ambiguous: "
                                + ", ".join(str(r.path) for r in found)
                                + "; pass the ledger or dev_config")
    return found[0]


def find_uio(ref: BackstoreRef, sys_class_uio: Path = SYS_CLASS_UIO) -> str:
    """The uio device (``uioN``; open ``/dev/uioN``) whose name matches ``ref``."""
    near: list[str] = []
    for d in sorted(sys_class_uio.glob("uio*")):
        try:
            uio_name = (d / "name").read_text().strip()
        except OSError:
            continue
        if uio_name == ref.uio_name:
            return d.name
        if uio_name.endswith(f"/{ref.name}/{ref.dev_config}"):
            near.append(f"{d.name}={uio_name}")
    hint = f" (same device and config, other hba: {', '.join(near)})" if near else ""
    raise BackstoreNotFound(f"no uio device named {ref.uio_name!r} in {sys_class_uio}{hint}")


def _action(ref: BackstoreRef, action: str, value: str, fs: KernelFs | None) -> None:
    path = ref.path / "action" / action
    try:
        (fs or KernelFs()).write(path, value)
    except OSError as exc:
        raise ExecutionError(f"cannot write {value} to {path}: {exc.strerror or exc}") from exc


def block_dev(ref: BackstoreRef, on: bool, fs: KernelFs | None = None) -> None:
    """Stop (True) or resume (False) the kernel queueing commands to the ring."""
    _action(ref, "block_dev", "1" if on else "0", fs)


def reset_ring(ref: BackstoreRef, mode: int, fs: KernelFs | None = None) -> None:
    """Empty the ring: mode 1 requeues in-flight commands, mode 2 fails them back with
    CHECK CONDITION (use 2 for tape). Only valid while the device is blocked."""
    if mode not in RESET_RING_MODES:
        raise ValueError(f"reset_ring mode must be 1 or 2, not {mode!r}")
    _action(ref, "reset_ring", str(mode), fs)


def prepare_reattach(ref: BackstoreRef, mode: int = 2, fs: KernelFs | None = None) -> None:
    """Steps 2-3: block the device, then reset its ring. On failure unblock again, so
    a failed reattach does not leave initiators hanging on a blocked device."""
    if mode not in RESET_RING_MODES:
        raise ValueError(f"reset_ring mode must be 1 or 2, not {mode!r}")
    block_dev(ref, True, fs)
    try:
        reset_ring(ref, mode, fs)
    except BaseException:
        block_dev(ref, False, fs)
        raise


def finish_reattach(ref: BackstoreRef, fs: KernelFs | None = None) -> None:
    """Step 5: the handler is serving the ring again; let commands flow."""
    block_dev(ref, False, fs)

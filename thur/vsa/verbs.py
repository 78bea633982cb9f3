"""The VSA's admin verbs: what `thurvsa` asks thurvsad over the admin socket.

Kept apart from the daemon so they can be served (and tested) without configfs
or a kernel: `vsa_verbs(store, exporter, info)` is the whole table, where the
`Exporter` is the daemon's side (the kernel export of each volume).

Sizes in requests and replies are bytes.

Verbs and their arguments:
    ping             {}
    vsa.info         {}
    volume.create    {"name", "size": int, "lun"?: int}    created, then exported at once
    volume.list      {}
    volume.info      {"name"}
    volume.resize    {"name", "size": int}                 grow; shrink only if unallocated
    volume.delete    {"name", "force"?: bool}

`volume.delete` is refused while the volume is exported and in use: an iSCSI
session is logged in to the target or an NVMe/TCP connection is open (every
session sees every LUN / namespace), or the daemon cannot tell. `force`
unexports it anyway: the initiator then sees the LUN go away (its I/O fails),
and the volume's data is gone for good.

Verbs that change nothing are marked `read_only`; the admin server records every
call of the others in the audit log (thur/audit.py).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, Protocol

from thur.admin import AdminError, Handler, int_arg, read_only, str_arg
from thur.volume import InvalidVolumeName, VolumeError, VolumeStore, VolumeStoreError

# Errors whose message is a one-line answer for the operator.
REFUSALS = (VolumeStoreError, VolumeError, InvalidVolumeName, ValueError)
Args = dict[str, Any]


class Exporter(Protocol):
    """The daemon's side of the verbs: the kernel export of each volume."""

    def export(self, name: str) -> None:
        """Export the (open) volume now: backstore, TCMU handler, LUN."""

    def unexport(self, name: str) -> None:
        """Remove its LUN, stop its handler, remove its backstore."""

    def exported(self, name: str) -> bool: ...

    def sessions(self) -> int | None:
        """iSCSI sessions and NVMe/TCP connections that can reach the volumes; None
        when it cannot be told."""

    def resized(self, name: str) -> None:
        """The volume's size changed: tell the initiators (CAPACITY DATA HAS CHANGED)."""


def _refusals_to_admin_errors(handler: Callable[[Args], Any]) -> Handler:
    @functools.wraps(handler)
    def run(args: Args) -> Any:
        try:
            return handler(args)
        except AdminError:
            raise
        except KeyError as exc:  # UnknownVolume is a KeyError: its str() is quoted
            raise AdminError(f"volume {exc.args[0]} does not exist") from exc
        except REFUSALS as exc:
            raise AdminError(str(exc) or type(exc).__name__) from exc

    return run


class VsaVerbs:
    """The verb handlers over one `VolumeStore` and the daemon's exporter."""

    def __init__(
        self, store: VolumeStore, exporter: Exporter, info: Callable[[], dict[str, Any]]
    ) -> None:
        self.store = store
        self.exporter = exporter
        self._info = info

    def table(self) -> dict[str, Handler]:
        verbs: dict[str, Callable[[Args], Any]] = {
            "ping": read_only(lambda _args: {"pid": os.getpid()}),
            "vsa.info": read_only(lambda _args: self._info()),
            "volume.create": self.volume_create,
            "volume.list": read_only(self.volume_list),
            "volume.info": read_only(self.volume_info),
            "volume.resize": self.volume_resize,
            "volume.delete": self.volume_delete,
        }
        return {name: _refusals_to_admin_errors(fn) for name, fn in verbs.items()}

    def volume(self, name: str) -> dict[str, Any]:
        info = self.store.info(name)
        return {
            "name": name,
            "lun": info.get("lun"),
            "size": info["size"],
            "block_size": info["block_size"],
            "page_size": info["page_size"],
            "serial": info["serial"],
            "mapped_bytes": info["mapped_bytes"],
            "write_protected": info.get("write_protected", False),
            "fence_waits_for_upload": info.get("fence_waits_for_upload", False),
            "replication_pending": info.get("replication_pending", False),
            "created": info.get("created"),
            "exported": self.exporter.exported(name),
        }

    def volume_create(self, args: Args) -> dict[str, Any]:
        name, size = str_arg(args, "name"), int_arg(args, "size")
        lun = int_arg(args, "lun", required=False)
        assert size is not None
        self.store.create(name, size, lun=lun)
        try:
            self.exporter.export(name)
        except Exception as exc:
            raise AdminError(
                f"volume {name} was created but could not be exported: {exc} "
                "(restart thurvsad to retry, or delete it)"
            ) from exc
        return self.volume(name)

    def volume_list(self, _args: Args) -> list[dict[str, Any]]:
        return [self.volume(name) for name in self.store.list()]

    def volume_info(self, args: Args) -> dict[str, Any]:
        return self.volume(str_arg(args, "name"))

    def volume_resize(self, args: Args) -> dict[str, Any]:
        name, size = str_arg(args, "name"), int_arg(args, "size")
        assert size is not None
        self.store.resize(name, size)
        if self.exporter.exported(name):
            self.exporter.resized(name)
        return self.volume(name)

    def volume_delete(self, args: Args) -> dict[str, Any]:
        name = str_arg(args, "name")
        force = args.get("force", False)
        if not isinstance(force, bool):
            raise AdminError(f"'force' must be true or false, not {force!r}")
        if not self.store.exists(name):
            raise AdminError(f"volume {name} does not exist")
        exported = self.exporter.exported(name)
        if exported and not force:
            sessions = self.exporter.sessions()
            if sessions is None or sessions > 0:
                why = ("the daemon cannot tell whether an initiator uses it"
                       if sessions is None
                       else f"{sessions} iSCSI session(s) or NVMe/TCP connection(s) "
                       "can reach it")
                raise AdminError(
                    f"volume {name} is exported and in use ({why}); log the initiators "
                    "out first, or use --force (their I/O to it will fail)"
                )
        if exported:
            self.exporter.unexport(name)
        self.store.delete(name)
        return {"name": name, "deleted": True, "was_exported": exported}


def vsa_verbs(
    store: VolumeStore, exporter: Exporter, info: Callable[[], dict[str, Any]]
) -> dict[str, Handler]:
    """The daemon's whole admin verb table."""
    return VsaVerbs(store, exporter, info).table()

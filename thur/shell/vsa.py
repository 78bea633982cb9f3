"""The thurvsa shell's tree.

    /
    ├── volumes/NAME   create, delete, resize, info; get/set attribute (size is settable)
    ├── iscsi          info: the target, its portals, sessions and LUNs
    ├── backends/K     K is cache or bucket: info, check (the bucket)
    └── system         stats, gc, cloud_check, audit_tail, audit_verify

Sizes take the CLI's binary suffixes (100G is 100 GiB; thur/vsa/cli.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from configshell_fb import ConfigShell, ExecutionError

from thur.shell.base import (
    Attributes,
    Collection,
    Connection,
    Item,
    Node,
    Root,
    flag,
    matches,
    number,
    run,
)
from thur.shell.system import Backends, SystemNode
from thur.vsa.cli import format_info, format_volume, format_volumes, parse_size
from thur.vsa.cli import size as _human

SIZE_HINTS = ("1G", "10G", "100G", "1T")
CHANGE_TIMEOUT = 120  # as the CLI: creating and exporting a LUN waits on configfs


def _size(text: str, name: str = "size") -> int:
    try:
        return parse_size(text)
    except argparse.ArgumentTypeError as exc:
        raise ExecutionError(f"'{name}': {exc}") from None


class VsaRoot(Root):
    def __init__(self, shell: ConfigShell, connection: Connection) -> None:
        super().__init__(shell, connection)
        Volumes(self)
        IscsiNode(self)
        Backends(self)
        SystemNode(self)

    def summary(self) -> tuple[str, bool | None]:
        return f"{self.conn.daemon} on {self.conn.socket}", None


class Volumes(Collection):
    def __init__(self, parent: Node) -> None:
        super().__init__("volumes", parent)

    def entries(self) -> dict[str, Any]:
        return {v["name"]: v for v in self.conn.read("volume.list")}

    def make_child(self, name: str, data: Any) -> Item:
        return Volume(name, self, data)

    def summary(self) -> tuple[str, bool | None]:
        return f"{len(self.children)} volumes", None

    def ui_command_create(self, name: str, size: str, lun: str | None = None) -> None:
        """Creates thin volume NAME (1-63 letters, digits, '_', '.', '-') of SIZE (e.g.
        100G; a multiple of 4096 bytes) and exports it as LUN (default: the lowest
        free one)."""
        request: dict[str, Any] = {"name": name, "size": _size(size)}
        if lun is not None:
            request["lun"] = number(lun, "lun")
        v = self.conn.call("volume.create", request, timeout=CHANGE_TIMEOUT)
        self.say(f"created {v['name']}: {_human(v['size'])}, LUN {v['lun']}"
                 + ("" if v["exported"] else " (not exported)"))

    def ui_complete_create(self, parameters: dict[str, str], text: str,
                           current_param: str) -> list[str]:
        if current_param == "size":
            return matches(text, SIZE_HINTS)
        if current_param == "lun":
            used = {v["lun"] for v in self.conn.read("volume.list")}
            free = [n for n in range(len(used) + 4) if n not in used][:4]
            return matches(text, [str(n) for n in free])
        return []

    def ui_command_delete(self, name: str, force: str = "false") -> None:
        """Deletes volume NAME and its data. Refused while it is exported and an iSCSI
        session is logged in; force=true deletes it anyway (the initiators' I/O to it
        fails)."""
        self.conn.call("volume.delete", {"name": name, "force": flag(force, "force")},
                       timeout=CHANGE_TIMEOUT)
        self.say(f"deleted {name}")

    def ui_command_resize(self, name: str, size: str) -> None:
        """Grows volume NAME to SIZE (or shrinks it, if the tail is unallocated); the
        initiators are told (CAPACITY DATA HAS CHANGED)."""
        v = self.conn.call("volume.resize", {"name": name, "size": _size(size)},
                           timeout=CHANGE_TIMEOUT)
        self.say(f"resized {v['name']} to {_human(v['size'])}")

    def ui_command_info(self, name: str | None = None) -> None:
        """Shows volume NAME in detail, or without NAME every volume: LUN, size, used."""
        if name is None:
            self.say(format_volumes(self.conn.read("volume.list")))
        else:
            self.say(format_volume(self.conn.read("volume.info", {"name": name})))

    def _complete_name(self, parameters: dict[str, str], text: str,
                       current_param: str) -> list[str]:
        if current_param == "name":
            return matches(text, self.names())
        if current_param == "size":
            return matches(text, SIZE_HINTS)
        if current_param == "force":
            return matches(text, ["true", "false"])
        return []

    ui_complete_delete = _complete_name
    ui_complete_resize = _complete_name
    ui_complete_info = _complete_name


class Volume(Attributes, Item):
    ATTRIBUTES = {
        "size": ("size", "The size; set it to grow the volume (or shrink an unallocated "
                         "tail), e.g. set attribute size=200G."),
        "name": ("string", "The volume's name."),
        "lun": ("number", "The LUN it is exported as."),
        "block_size": ("number", "Logical block size in bytes."),
        "page_size": ("number", "Allocation unit in bytes."),
        "serial": ("string", "Unit serial number (VPD page 0x80)."),
        "mapped_bytes": ("number", "Bytes allocated (written and not unmapped)."),
        "exported": ("bool", "Whether the kernel exports it now."),
        "write_protected": ("bool", "Read-only for the initiators."),
        "replication_pending": ("bool", "Changes not yet on the replica."),
    }
    WRITABLE = frozenset({"size"})

    def __init__(self, name: str, parent: Collection, data: Any) -> None:
        super().__init__(name, parent, data)
        self.define_attributes()

    def summary(self) -> tuple[str, bool | None]:
        v = self.fresh()
        state = "exported" if v["exported"] else "not exported"
        return (f"{_human(v['size'])}, LUN {v['lun']}, {_human(v['mapped_bytes'])} used, "
                f"{state}"), v["exported"] or None

    def ui_type_size(self, value: str | None = None, enum: bool = False,
                     reverse: bool = False) -> Any:
        """configshell's type hook for `size`: '100G' in, '100.00 GiB (107374182400)' out."""
        if reverse:
            return "n/a" if value is None else f"{_human(int(value))} ({value} bytes)"
        if value is None:
            return [] if enum else "SIZE (e.g. 100G)"
        try:
            return parse_size(value)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None

    def ui_setgroup_attribute(self, name: str, value: Any) -> None:
        # Only `size` is writable (WRITABLE); configshell refuses the others.
        self.conn.call("volume.resize", {"name": self.name, "size": value},
                       timeout=CHANGE_TIMEOUT)

    def ui_command_info(self) -> None:
        """Shows the volume: LUN, size, bytes used, block and page size, serial, export
        state, flags, replication."""
        self.say(format_volume(self.conn.read("volume.info", {"name": self.name})))

    def ui_command_resize(self, size: str) -> None:
        """Grows this volume to SIZE (or shrinks it, if the tail is unallocated)."""
        v = self.conn.call("volume.resize", {"name": self.name, "size": _size(size)},
                           timeout=CHANGE_TIMEOUT)
        self.say(f"resized {v['name']} to {_human(v['size'])}")

    def ui_complete_resize(self, parameters: dict[str, str], text: str,
                           current_param: str) -> list[str]:
        return matches(text, SIZE_HINTS) if current_param == "size" else []


class IscsiNode(Node):
    def __init__(self, parent: Node) -> None:
        super().__init__("iscsi", parent)

    def summary(self) -> tuple[str, bool | None]:
        return self.conn.read("vsa.info")["target_iqn"], None

    def ui_command_info(self) -> None:
        """Shows the iSCSI target, its portals, the sessions logged in and each LUN."""
        self.say(format_info(self.conn.read("vsa.info")))


def tree(shell: ConfigShell, connection: Connection) -> Root:
    return VsaRoot(shell, connection)


def main(socket: Path, argv: list[str]) -> int:
    """`thurvsa shell [COMMAND...]` (exit status: thur/shell/base.py run())."""
    return run(Connection(socket, "thurvsa", "thurvsad"), tree, argv)

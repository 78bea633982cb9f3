"""The thurvtl shell's tree.

    /
    ├── library        info: topology and serial numbers
    ├── slots/N        N is the mtx slot number; ls shows what each holds; load
    ├── drives/N       N is the drive index; ls shows what is loaded; unload
    ├── mailslots/N    N counts mail slots from 1 (`create ... mail_slot=N`)
    ├── cartridges/B   create, delete, info; B is the barcode (get attribute ...)
    ├── iscsi          info: the target and its LUNs
    ├── backends/K     K is cache or bucket: info, check (the bucket)
    └── system         stats, gc, cloud_check, audit_tail, audit_verify

Slots, drives and mail slots come from `changer.inventory`, cartridges from
`cartridge.list`; the numbers are the CLI's (thur/vtl/cli.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from configshell_fb import ConfigShell

from thur.shell.base import (
    Attributes,
    Collection,
    Connection,
    Item,
    Node,
    Root,
    Unsupported,
    flag,
    matches,
    number,
    render,
    run,
)
from thur.shell.system import Backends, SystemNode
from thur.vtl.cli import format_cartridge, format_cartridges, format_library, size


def _where(loc: dict[str, Any] | None) -> str:
    return loc["element"] if loc else "outside the library"


class VtlRoot(Root):
    def __init__(self, shell: ConfigShell, connection: Connection) -> None:
        super().__init__(shell, connection)
        LibraryNode(self)
        Slots(self)
        Drives(self)
        MailSlots(self)
        Cartridges(self)
        IscsiNode(self)
        Backends(self)
        SystemNode(self)

    def summary(self) -> tuple[str, bool | None]:
        return f"{self.conn.daemon} on {self.conn.socket}", None


class LibraryNode(Node):
    def __init__(self, parent: Node) -> None:
        super().__init__("library", parent)

    def summary(self) -> tuple[str, bool | None]:
        i = self.conn.read("library.info")
        return (f"{i['chassis_serial']}: {i['num_slots']} slots, {i['num_mail_slots']} mail "
                f"slots, {i['num_drives']} drives"), None

    def ui_command_info(self) -> None:
        """Shows the target, the chassis serial, the sizes and each drive's LUN and serial."""
        self.say(format_library(self.conn.read("library.info")))


# ---- elements: slots, drives, mail slots -------------------------------------------------


class Elements(Collection):
    """Children are the inventory's elements of one type, named by their number."""

    TYPE = ""
    NOUN = ""

    def elements(self) -> list[dict[str, Any]]:
        return [e for e in self.conn.read("changer.inventory")["elements"]
                if e["type"] == self.TYPE]

    def entries(self) -> dict[str, Any]:
        return {str(e["number"]): e for e in self.elements()}

    def summary(self) -> tuple[str, bool | None]:
        elements = self.elements()
        full = sum(1 for e in elements if e["full"])
        return f"{len(elements)} {self.NOUN}, {full} full", None


class Element(Item):
    def summary(self) -> tuple[str, bool | None]:
        e = self.fresh()
        return (e["barcode"] if e["full"] else "empty"), None

    def ui_command_info(self) -> None:
        """Shows the element: its SMC address, what it holds and where that came from;
        for a full element also the cartridge itself."""
        e = self.fresh()
        self.say(f"{e['element']}: element {e['address']:#06x}, "
                 + (f"holds {e['barcode']}" + (f" (from {e['source']})" if e["source"] else "")
                    if e["full"] else "empty"))
        if e["full"]:
            self.say(format_cartridge(self.conn.read("cartridge.info",
                                                     {"barcode": e["barcode"]})))


def empty_numbers(conn: Connection, kind: str) -> list[str]:
    return [str(e["number"]) for e in conn.read("changer.inventory")["elements"]
            if e["type"] == kind and not e["full"]]


def full_numbers(conn: Connection, kind: str) -> list[str]:
    return [str(e["number"]) for e in conn.read("changer.inventory")["elements"]
            if e["type"] == kind and e["full"]]


class Slots(Elements):
    TYPE = "slot"
    NOUN = "slots"

    def __init__(self, parent: Node) -> None:
        super().__init__("slots", parent)

    def make_child(self, name: str, data: Any) -> Item:
        return Slot(name, self, data)


class Slot(Element):
    def ui_command_load(self, drive: str) -> None:
        """Moves this slot's cartridge into drive DRIVE (0-based), which loads it."""
        result = self.conn.call("changer.load", {"slot": int(self.name),
                                                 "drive": number(drive, "drive")})
        self.say(f"{result['barcode']}: {result['from']['element']} -> "
                 f"{result['to']['element']}")

    def ui_complete_load(self, parameters: dict[str, str], text: str,
                         current_param: str) -> list[str]:
        if current_param == "drive":
            return matches(text, empty_numbers(self.conn, "drive"))
        return []


class Drives(Elements):
    TYPE = "drive"
    NOUN = "drives"

    def __init__(self, parent: Node) -> None:
        super().__init__("drives", parent)

    def make_child(self, name: str, data: Any) -> Item:
        return Drive(name, self, data)


class Drive(Element):
    def summary(self) -> tuple[str, bool | None]:
        e = self.fresh()
        if not e["full"]:
            return "empty", None
        return f"{e['barcode']} loaded" + (f" from {e['source']}" if e["source"] else ""), None

    def ui_command_info(self) -> None:
        """Shows the drive element and its cartridge, and the drive's own status when
        the daemon reports it (drive.status)."""
        super().ui_command_info()
        try:
            status = self.conn.read("drive.status", {"drive": int(self.name)})
        except Unsupported:
            return
        self.say(render(status))

    def ui_command_unload(self, slot: str | None = None) -> None:
        """Moves the drive's cartridge to slot SLOT, by default back where it came from."""
        request: dict[str, Any] = {"drive": int(self.name)}
        if slot is not None:
            request["slot"] = number(slot, "slot")
        result = self.conn.call("changer.unload", request)
        self.say(f"{result['barcode']}: {result['from']['element']} -> "
                 f"{result['to']['element']}")

    def ui_complete_unload(self, parameters: dict[str, str], text: str,
                           current_param: str) -> list[str]:
        if current_param == "slot":
            return matches(text, empty_numbers(self.conn, "slot"))
        return []


class MailSlots(Elements):
    """Named 1, 2... as `create ... mail_slot=N` counts them (mtx numbers them on
    from the last slot; the summary shows that number)."""

    TYPE = "mail"
    NOUN = "mail slots"

    def __init__(self, parent: Node) -> None:
        super().__init__("mailslots", parent)

    def entries(self) -> dict[str, Any]:
        return {str(i): e for i, e in enumerate(self.elements(), 1)}

    def make_child(self, name: str, data: Any) -> Item:
        return MailSlot(name, self, data)


class MailSlot(Element):
    def summary(self) -> tuple[str, bool | None]:
        e = self.fresh()
        return f"slot {e['number']}: " + (e["barcode"] if e["full"] else "empty"), None


# ---- cartridges ----------------------------------------------------------------------------


class Cartridges(Collection):
    def __init__(self, parent: Node) -> None:
        super().__init__("cartridges", parent)

    def entries(self) -> dict[str, Any]:
        return {c["barcode"]: c for c in self.conn.read("cartridge.list")}

    def make_child(self, name: str, data: Any) -> Item:
        return Cartridge(name, self, data)

    def summary(self) -> tuple[str, bool | None]:
        return f"{len(self.children)} cartridges", None

    def ui_command_create(self, barcode: str, slot: str | None = None,
                          mail_slot: str | None = None, worm: str = "false") -> None:
        """Creates a blank cartridge BARCODE (6-8 upper-case letters and digits, e.g.
        ABC123L8; a CLN prefix makes a cleaning cartridge) in slot SLOT (mtx number),
        or in mail slot MAIL_SLOT (from 1), by default in the first empty slot.
        worm=true makes it write once, read many."""
        request: dict[str, Any] = {"barcode": barcode, "worm": flag(worm, "worm")}
        if slot is not None:
            request["slot"] = number(slot, "slot")
        if mail_slot is not None:
            request["mail_slot"] = number(mail_slot, "mail_slot")
        result = self.conn.call("cartridge.create", request)
        self.say(f"created {result['barcode']} in {_where(result['location'])}")

    def ui_complete_create(self, parameters: dict[str, str], text: str,
                           current_param: str) -> list[str]:
        if current_param == "slot":
            return matches(text, empty_numbers(self.conn, "slot"))
        if current_param == "mail_slot":
            mail = [e for e in self.conn.read("changer.inventory")["elements"]
                    if e["type"] == "mail"]
            return matches(text, [str(i) for i, e in enumerate(mail, 1) if not e["full"]])
        if current_param == "worm":
            return matches(text, ["true", "false"])
        return []

    def ui_command_delete(self, barcode: str) -> None:
        """Deletes cartridge BARCODE and its data (refused while it is in a drive)."""
        self.conn.call("cartridge.delete", {"barcode": barcode})
        self.say(f"deleted {barcode}")

    def ui_command_info(self, barcode: str | None = None) -> None:
        """Shows cartridge BARCODE in detail, or without BARCODE every cartridge: where,
        type, bytes used."""
        if barcode is None:
            self.say(format_cartridges(self.conn.read("cartridge.list")))
        else:
            self.say(format_cartridge(self.conn.read("cartridge.info", {"barcode": barcode})))

    def _complete_barcode(self, text: str, current_param: str) -> list[str]:
        return matches(text, self.names()) if current_param == "barcode" else []

    def ui_complete_delete(self, parameters: dict[str, str], text: str,
                           current_param: str) -> list[str]:
        return self._complete_barcode(text, current_param)

    def ui_complete_info(self, parameters: dict[str, str], text: str,
                         current_param: str) -> list[str]:
        return self._complete_barcode(text, current_param)


class Cartridge(Attributes, Item):
    ATTRIBUTES = {
        "barcode": ("string", "The cartridge's barcode (its volume tag)."),
        "worm": ("bool", "Write once, read many."),
        "cleaning": ("bool", "A cleaning cartridge."),
        "write_protected": ("bool", "Write protected (cleaning cartridges are)."),
        "capacity_bytes": ("number", "Native capacity in bytes."),
        "used_bytes": ("number", "Bytes written to it."),
        "load_count": ("number", "How often it was loaded into a drive."),
        "local_only_bytes": ("number", "Bytes not yet in the bucket."),
    }

    def __init__(self, name: str, parent: Collection, data: Any) -> None:
        super().__init__(name, parent, data)
        self.define_attributes()

    def summary(self) -> tuple[str, bool | None]:
        c = self.fresh()
        kind = "cleaning" if c["cleaning"] else ("WORM" if c["worm"] else "data")
        return f"{_where(c['location'])}, {kind}, {size(c['used_bytes'])} used", None

    def ui_command_info(self) -> None:
        """Shows the cartridge: location and element address, where it came from,
        flags, capacity, bytes used, local-only bytes and load count."""
        self.say(format_cartridge(self.conn.read("cartridge.info", {"barcode": self.name})))

    def ui_command_delete(self) -> None:
        """Deletes this cartridge and its data (refused while it is in a drive)."""
        self.conn.call("cartridge.delete", {"barcode": self.name})
        self.say(f"deleted {self.name}")


# ---- iSCSI ---------------------------------------------------------------------------------


class IscsiNode(Node):
    def __init__(self, parent: Node) -> None:
        super().__init__("iscsi", parent)

    def summary(self) -> tuple[str, bool | None]:
        return self.conn.read("library.info")["target_iqn"], None

    def ui_command_info(self) -> None:
        """Shows the iSCSI target and its LUNs: the changer is LUN 0, drive N is LUN N+1."""
        i = self.conn.read("library.info")
        lines = [f"Target  {i['target_iqn']}", f"LUN 0   changer (serial {i['chassis_serial']})"]
        lines += [f"LUN {d['lun']:<3} drive {d['index']} (serial {d['serial']})"
                  for d in i["drives"]]
        self.say("\n".join(lines))


def tree(shell: ConfigShell, connection: Connection) -> Root:
    return VtlRoot(shell, connection)


def main(socket: Path, argv: list[str]) -> int:
    """`thurvtl shell [COMMAND...]` (exit status: thur/shell/base.py run())."""
    return run(Connection(socket, "thurvtl", "thurvtld"), tree, argv)


"""The library's admin verbs: what `thurvtl` asks the daemon over the admin socket.

Kept apart from the daemon so they can be served (and tested) without configfs or a
kernel: `library_verbs(changer, info)` is the whole table.

Numbers in requests and replies are the ones people use and `mtx status` prints:
slots are 1-based and mail slots continue after the storage slots; drives are 0-based
(see thur/library/elements.py). Every reply also carries the SMC element address.

Verbs and their arguments:
    ping                 {}
    library.info         {}
    cartridge.create     {"barcode", "slot"?: int, "mail_slot"?: int, "worm"?: bool}
    cartridge.list       {}
    cartridge.info       {"barcode"}
    changer.inventory    {}
    changer.load         {"slot": int, "drive": int}
    changer.unload       {"drive": int, "slot"?: int}

Verbs that change nothing are marked `read_only`; the admin server records every
call of the others in the audit log (thur/audit.py).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from handlers.scsi import ChangerError
from thur.admin import AdminError, Handler, read_only
from thur.library import (
    BarcodeError,
    CartridgeExists,
    CartridgeFacts,
    CartridgeNotFound,
    Kind,
    LibraryChanger,
    Location,
    NoSuchElement,
)

# Errors whose message is a one-line answer for the operator.
REFUSALS = (ChangerError, BarcodeError, NoSuchElement, CartridgeExists, CartridgeNotFound)
Args = dict[str, Any]


def _refusals_to_admin_errors(handler: Callable[[Args], Any]) -> Handler:
    @functools.wraps(handler)
    def run(args: Args) -> Any:
        try:
            return handler(args)
        except REFUSALS as exc:
            raise AdminError(str(exc) or type(exc).__name__) from exc

    return run


def _int(args: Args, name: str, *, required: bool = True) -> int | None:
    value = args.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminError(f"'{name}' must be a whole number, not {value!r}")
    return value


def _str(args: Args, name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise AdminError(f"'{name}' must be a string, not {value!r}")
    return value


class LibraryVerbs:
    """The verb handlers over one `LibraryChanger`."""

    def __init__(self, changer: LibraryChanger, info: Callable[[], dict[str, Any]]) -> None:
        self.changer = changer
        self.geometry = changer.geometry
        self._info = info

    def table(self) -> dict[str, Handler]:
        verbs: dict[str, Callable[[Args], Any]] = {
            "ping": read_only(lambda _args: {"pid": os.getpid()}),
            "library.info": read_only(lambda _args: self._info()),
            "cartridge.create": self.cartridge_create,
            "cartridge.list": read_only(self.cartridge_list),
            "cartridge.info": read_only(self.cartridge_info),
            "changer.inventory": read_only(self.changer_inventory),
            "changer.load": self.changer_load,
            "changer.unload": self.changer_unload,
        }
        return {name: _refusals_to_admin_errors(fn) for name, fn in verbs.items()}

    # ---- rendering ---------------------------------------------------------------------

    def location(self, loc: Location | None) -> dict[str, Any] | None:
        if loc is None:
            return None
        return {
            "element": self.geometry.label(loc),
            "type": loc.kind.value,
            "number": self.geometry.number(loc),
            "address": self.changer.elements.address(loc),
        }

    def cartridge(self, facts: CartridgeFacts) -> dict[str, Any]:
        p = facts.placement
        return {
            "barcode": facts.barcode,
            "location": self.location(p.location) if p else None,
            "source": self.location(p.source) if p else None,
            "loaded": facts.loaded,
            "worm": facts.worm,
            "cleaning": facts.cleaning,
            "write_protected": facts.write_protected,
            "capacity_bytes": facts.capacity_bytes,
            "used_bytes": facts.used_bytes,
            "load_count": facts.load_count,
            "local_only_bytes": facts.local_only_bytes,
        }

    # ---- verbs ---------------------------------------------------------------------------

    def cartridge_create(self, args: Args) -> dict[str, Any]:
        barcode = _str(args, "barcode")
        slot, mail = _int(args, "slot", required=False), _int(args, "mail_slot", required=False)
        if slot is not None and mail is not None:
            raise AdminError("give a slot or a mail slot, not both")
        at = None
        if slot is not None:
            at = self.geometry.slot(slot)
        elif mail is not None:
            at = self.geometry.mail_slot(mail)
        worm = args.get("worm", False)
        if not isinstance(worm, bool):
            raise AdminError(f"'worm' must be true or false, not {worm!r}")
        self.changer.create_cartridge(barcode, at, worm=worm)
        return self.cartridge(self.changer.facts(barcode))

    def cartridge_list(self, _args: Args) -> list[dict[str, Any]]:
        return [self.cartridge(f) for f in self.changer.all_facts()]

    def cartridge_info(self, args: Args) -> dict[str, Any]:
        return self.cartridge(self.changer.facts(_str(args, "barcode")))

    def changer_inventory(self, _args: Args) -> dict[str, Any]:
        inventory = self.changer.inventory
        transport = self.changer.layout.transport
        elements: list[dict[str, Any]] = [{
            "element": "robot", "type": "transport", "number": None,
            "address": transport.first, "full": False, "barcode": None,
            "source": None, "imported": False,
        }]
        for kind in (Kind.DRIVE, Kind.SLOT, Kind.MAIL):
            for loc in self.geometry.locations(kind):
                p = inventory.at(loc)
                row = self.location(loc)
                assert row is not None
                row.update({
                    "full": p is not None,
                    "barcode": p.barcode if p else None,
                    "source": self.geometry.label(p.source) if p and p.source else None,
                    "imported": bool(p and p.imported),
                })
                elements.append(row)
        return {"prevent_removal": self.changer.prevent_removal, "elements": elements}

    def _moved(self, barcode: str, src: Location, dst: Location) -> dict[str, Any]:
        return {"barcode": barcode, "from": self.location(src), "to": self.location(dst)}

    def changer_load(self, args: Args) -> dict[str, Any]:
        slot_number, drive_index = _int(args, "slot"), _int(args, "drive")
        assert slot_number is not None and drive_index is not None
        src, dst = self.geometry.slot(slot_number), self.geometry.drive(drive_index)
        with self.changer.lock:
            p = self.changer.inventory.at(src)
            self.changer.move_cartridge(src, dst)
        assert p is not None  # move_cartridge refuses an empty source
        return self._moved(p.barcode, src, dst)

    def changer_unload(self, args: Args) -> dict[str, Any]:
        drive_index, slot_number = _int(args, "drive"), _int(args, "slot", required=False)
        assert drive_index is not None
        src = self.geometry.drive(drive_index)
        dst = self.geometry.slot(slot_number) if slot_number is not None else None
        with self.changer.lock:
            p = self.changer.inventory.at(src)
            dst = self.changer.unload_drive(src, dst)
        assert p is not None
        return self._moved(p.barcode, src, dst)


def library_verbs(
    changer: LibraryChanger, info: Callable[[], dict[str, Any]]
) -> dict[str, Handler]:
    """The daemon's whole admin verb table."""
    return LibraryVerbs(changer, info).table()

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
    cartridge.delete     {"barcode", "force"?: bool}
    changer.inventory    {}
    changer.load         {"slot": int, "drive": int}
    changer.unload       {"drive": int, "slot"?: int}
    changer.move         {"from": element, "to": element}
    library.bounds       {}
    drive.status         {"drive"?: int}           every drive without "drive"

An element is named `slot:N` (the mtx slot number: mail slots continue after the
storage slots), `mail:N` (1-based), `drive:N` (0-based), or by its SMC element
address, `0x0402` or `addr:1026`. `changer.move` moves between any two of them
through the same `LibraryChanger.move_cartridge` as the changer LU's MOVE MEDIUM,
with its refusals (empty source, full destination, export while prevented, a drive
held by PREVENT MEDIUM REMOVAL).

`cartridge.delete` is refused while the cartridge is in a drive (unload it first;
there is no override: an initiator may be using it) and, without `force`, while it
holds data. It removes the cartridge from the inventory, then from storage here and
in the bucket; its chunks are garbage for `system gc`.

The shared `system.*` and `iscsi.chap` verbs are in thur/system_verbs.py.

Verbs that change nothing are marked `read_only`; the admin server records every
call of the others in the audit log (thur/audit.py).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

from handlers.scsi import ChangerError
from thur.admin import AdminError, Handler, int_arg, read_only, str_arg
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
from thur.library.bounds import library_bounds

# Errors whose message is a one-line answer for the operator.
REFUSALS = (ChangerError, BarcodeError, NoSuchElement, CartridgeExists, CartridgeNotFound)
Args = dict[str, Any]


def _refusals_to_admin_errors(handler: Callable[..., Any]) -> Handler:
    @functools.wraps(handler)
    def run(args: Args, *progress: Any) -> Any:
        try:
            return handler(args, *progress)
        except REFUSALS as exc:
            raise AdminError(str(exc) or type(exc).__name__) from exc

    return run


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
            "cartridge.delete": self.cartridge_delete,
            "changer.inventory": read_only(self.changer_inventory),
            "changer.load": self.changer_load,
            "changer.unload": self.changer_unload,
            "changer.move": self.changer_move,
            "library.bounds": read_only(self.library_bounds),
            "drive.status": read_only(self.drive_status),
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
        barcode = str_arg(args, "barcode")
        slot = int_arg(args, "slot", required=False)
        mail = int_arg(args, "mail_slot", required=False)
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
        return self.cartridge(self.changer.facts(str_arg(args, "barcode")))

    def cartridge_delete(self, args: Args) -> dict[str, Any]:
        barcode = str_arg(args, "barcode")
        force = args.get("force", False)
        if not isinstance(force, bool):
            raise AdminError(f"'force' must be true or false, not {force!r}")
        return {**self.cartridge(self.changer.delete_cartridge(barcode, force=force)),
                "deleted": True}

    def library_bounds(self, _args: Args) -> dict[str, Any]:
        with self.changer.lock:
            inventory = self.changer.inventory
        return library_bounds(inventory, self.geometry, self.changer.elements.bases,
                              self.geometry.label)

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
        slot_number, drive_index = int_arg(args, "slot"), int_arg(args, "drive")
        assert slot_number is not None and drive_index is not None
        src, dst = self.geometry.slot(slot_number), self.geometry.drive(drive_index)
        with self.changer.lock:
            p = self.changer.inventory.at(src)
            self.changer.move_cartridge(src, dst)
        assert p is not None  # move_cartridge refuses an empty source
        return self._moved(p.barcode, src, dst)

    def changer_unload(self, args: Args) -> dict[str, Any]:
        drive_index, slot_number = int_arg(args, "drive"), int_arg(args, "slot", required=False)
        assert drive_index is not None
        src = self.geometry.drive(drive_index)
        dst = self.geometry.slot(slot_number) if slot_number is not None else None
        with self.changer.lock:
            p = self.changer.inventory.at(src)
            dst = self.changer.unload_drive(src, dst)
        assert p is not None
        return self._moved(p.barcode, src, dst)


    def element(self, args: Args, name: str) -> Location:
        """`slot:3`, `mail:1`, `drive:0`, `0x0402` or `addr:1026` to a location."""
        text = str_arg(args, name).strip().lower()
        kind, sep, number = text.partition(":")
        kinds = {"slot": self.geometry.slot, "mail": self.geometry.mail_slot,
                 "drive": self.geometry.drive}
        try:
            if not sep and kind.startswith("0x"):
                address = int(kind, 16)
            elif sep and kind in ("addr", "address"):
                address = int(number, 0)
            elif sep and kind in kinds:
                index = int(number)
            else:
                raise ValueError(text)
        except ValueError:
            raise AdminError(f"'{name}': {args[name]!r} is not an element: use slot:N, "
                             "mail:N, drive:N or an element address (0x0402)") from None
        if sep and kind in kinds:
            return kinds[kind](index)
        loc = self.changer.elements.location(address)
        if loc is None:
            raise AdminError(f"'{name}': no storage, mail slot or drive element at address "
                             f"{address:#06x}")
        return loc

    def changer_move(self, args: Args) -> dict[str, Any]:
        src, dst = self.element(args, "from"), self.element(args, "to")
        with self.changer.lock:
            p = self.changer.inventory.at(src)
            self.changer.move_cartridge(src, dst)
        assert p is not None  # move_cartridge refuses an empty source
        return self._moved(p.barcode, src, dst)

    def drive_status(self, args: Args) -> list[dict[str, Any]]:
        index = int_arg(args, "drive", required=False)
        drives = range(self.geometry.drives) if index is None else [index]
        return [self.drive(self.geometry.drive(i)) for i in drives]

    def drive(self, loc: Location) -> dict[str, Any]:
        """One drive as its engine sees it (the fields an engine does not have are None)."""
        engine = self.changer.drives[loc.index]
        with self.changer.lock:
            placed = self.changer.inventory.at(loc)
        out: dict[str, Any] = {
            **(self.location(loc) or {}),
            "serial": engine.identity.serial,
            "barcode": placed.barcode if placed else None,
        }
        # Not under the engine's lock: a command may hold it for as long as a write
        # waits for pool space; these reads are each atomic, position() has its own lock.
        out.update(drive_state(engine))
        return out


def drive_state(engine: Any) -> dict[str, Any]:
    """What a `TapeDrive` knows: medium, position, block size, compression, encryption,
    locks and counters. Never the encryption key."""
    medium = engine.medium
    position = None
    if medium is not None and getattr(engine, "ready", False):
        try:
            pos = medium.position()
            position = {"partition": pos.partition, "object": pos.object_id,
                        "file": pos.file_id, "bop": pos.bop, "eod": pos.eod}
        except Exception as exc:  # a failing medium still gets its drive shown
            position = {"error": str(exc)}
    modes = getattr(engine, "modes", None)
    page = modes.get(0x0F) if modes is not None else None
    enc = getattr(engine, "encryption", None)
    stats = getattr(engine, "stats", None)
    return {
        "medium": medium is not None,
        "threaded": getattr(engine, "ready", None),
        "position": position,
        "block_size": getattr(engine, "block_length", None),
        "compression": bool(page.current[2] & 0x80) if page is not None else None,
        "encryption": None if enc is None else {
            "encrypt": bool(enc.encryption_mode), "decrypt": bool(enc.decryption_mode),
            "key_loaded": enc.key is not None},
        "write_protected": getattr(medium, "write_protected", None) if medium else None,
        "prevent_removal": getattr(engine, "prevent_removal", None),
        "cleaning_required": getattr(engine, "cleaning_required", None),
        "load_count": getattr(engine, "load_count", None),
        "stats": None if stats is None else dataclasses.asdict(stats),
    }


def library_verbs(
    changer: LibraryChanger, info: Callable[[], dict[str, Any]]
) -> dict[str, Handler]:
    """The daemon's whole admin verb table."""
    return LibraryVerbs(changer, info).table()

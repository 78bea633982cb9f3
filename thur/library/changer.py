"""`LibraryChanger`: the persistent `ChangerModel` behind the changer LU and the admin API.

One object, one lock: the changer LU's thread (MOVE/EXCHANGE MEDIUM) and the admin
socket's threads (cartridge create, changer load/unload) all change the inventory
through it.

Every change follows one order (`_transition`):
1. validate against the current inventory (empty source 3B/0E, full destination 3B/0D,
   invalid element 21/01, export while the changer is prevented 53/02) — nothing has
   changed yet when one of these is raised;
2. unload the drives that give a cartridge up (auto-unload: SCSI.md lets us pick, and
   `mtx unload` expects it; a drive held by PREVENT MEDIUM REMOVAL refuses with 53/02),
   then load the drives that receive one (the drive then reports 06/28/00);
3. write the new inventory atomically; only then is the change adopted and the command
   acknowledged. If step 2 or 3 fails, the drives are put back as they were and the
   inventory stays untouched.
Drive state is volatile and rebuilt from the inventory on start (`restore_drives`), so
a kill -9 anywhere in this sequence leaves the library as before or after the move.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from handlers.scsi import (
    ChangerError,
    DestinationFull,
    DriveLink,
    ElementLayout,
    ElementStatus,
    ElementType,
    InvalidElement,
    InvalidRequest,
    Medium,
    RemovalPrevented,
    SourceEmpty,
)
from handlers.scsi.ssc import DriveOccupied, MediumRemovalPrevented
from thur.config import LibraryConfig
from thur.library.barcode import parse_barcode
from thur.library.cartridges import CartridgeExists, CartridgeNotFound, CartridgeSource
from thur.library.elements import ElementBases, ElementMap, Kind, Location
from thur.library.identity import LibraryIdentity, geometry_of
from thur.library.inventory import Inventory, InventoryFile, Placement

log = logging.getLogger(__name__)


class CartridgeUnavailable(ChangerError):
    """Storage cannot open the cartridge (HARDWARE ERROR 44/00 to the initiator)."""


class InventoryWriteFailed(ChangerError):
    """The new inventory could not be made durable; nothing changed."""


class LibraryFull(ChangerError):
    """No empty slot for a new cartridge."""

    sense = DestinationFull.sense


@dataclass(frozen=True, slots=True)
class CartridgeFacts:
    """What `thurvtl cartridge list/info` shows about one cartridge."""

    barcode: str
    placement: Placement | None  # None: in storage but outside the library
    loaded: bool  # its drive LU holds the medium (threaded or not after an UNLOAD)
    worm: bool | None
    cleaning: bool
    write_protected: bool | None
    capacity_bytes: int | None
    used_bytes: int | None
    load_count: int | None
    local_only_bytes: int | None


class LibraryChanger:
    """The library's changer model over the persisted inventory and a cartridge source."""

    def __init__(
        self,
        *,
        elements: ElementMap,
        inventory: Inventory,
        inventory_file: InventoryFile,
        source: CartridgeSource,
        drives: Sequence[DriveLink],
    ) -> None:
        if len(drives) != elements.geometry.drives:
            raise ValueError("the element map and the drives disagree on the drive count")
        self.elements = elements
        self.geometry = elements.geometry
        self.source = source
        self.drives = list(drives)
        self._file = inventory_file
        self._inv = inventory.fit(self.geometry)
        self._prevent = False
        self.lock = threading.RLock()

    # ---- ChangerModel (addresses; the changer LU) ------------------------------------

    @property
    def layout(self) -> ElementLayout:
        return self.elements.layout

    def status(self, address: int) -> ElementStatus:
        with self.lock:
            kind = self.layout.type_of(address)
            if kind is None:
                raise InvalidElement(f"no element at address {address:#06x}")
            loc = self.elements.location(address)
            if loc is None:
                return ElementStatus(address=address, type=kind)
            p = self._inv.at(loc)
            drive = self.drives[loc.index] if loc.kind == Kind.DRIVE else None
            return ElementStatus(
                address=address,
                type=kind,
                full=p is not None,
                barcode=p.barcode if p else None,
                source=self.elements.address(p.source) if p and p.source else None,
                imported=bool(p and p.imported),
                drive=drive.identity if drive else None,
            )

    def move(self, source: int, destination: int) -> None:
        with self.lock:
            self.move_cartridge(self._location(source), self._location(destination))

    def exchange(self, source: int, first: int, second: int) -> None:
        with self.lock:
            src, one, two = (self._location(a) for a in (source, first, second))
            if one == src or two == one:
                raise InvalidRequest("exchange needs a first destination apart from both ends")
            moving, displaced = self._inv.at(src), self._inv.at(one)
            if moving is None:
                raise SourceEmpty(f"{self._label(src)} is empty")
            if displaced is None:
                raise SourceEmpty(f"{self._label(one)} is empty")
            occupant = self._inv.at(two)
            if two != src and occupant is not None:
                raise DestinationFull(f"{self._label(two)} holds {occupant.barcode}")
            self._check_export(one)
            self._check_export(two)
            self._transition(self._inv.with_moves([(src, one), (one, two)]))

    def initialize(self, addresses: range | None = None) -> None:
        """INITIALIZE ELEMENT STATUS: the inventory is always exact; only check addresses."""
        for address in addresses or ():
            if self.layout.type_of(address) is None:
                raise InvalidElement(f"no element at address {address:#06x}")

    def set_prevent_removal(self, prevent: bool) -> None:
        with self.lock:
            self._prevent = prevent

    @property
    def prevent_removal(self) -> bool:
        return self._prevent

    # ---- operator side (locations; the admin API) ------------------------------------

    @property
    def inventory(self) -> Inventory:
        """A snapshot (inventories are immutable)."""
        return self._inv

    def move_cartridge(self, src: Location, dst: Location) -> None:
        with self.lock:
            self._check_location(src)
            self._check_location(dst)
            moving = self._inv.at(src)
            if moving is None:
                raise SourceEmpty(f"{self._label(src)} is empty")
            if src == dst:
                return
            occupant = self._inv.at(dst)
            if occupant is not None:
                raise DestinationFull(f"{self._label(dst)} holds {occupant.barcode}")
            self._check_export(dst)
            self._transition(self._inv.with_moves([(src, dst)]))

    def unload_drive(self, drive: Location, dst: Location | None = None) -> Location:
        """Move the cartridge out of `drive`, by default back where it came from."""
        with self.lock:
            self._check_location(drive)
            p = self._inv.at(drive)
            if p is None:
                raise SourceEmpty(f"{self._label(drive)} is empty")
            if dst is None:
                dst = p.source
                if dst is None or dst.kind == Kind.DRIVE:
                    raise InvalidRequest(
                        f"{p.barcode} in {self._label(drive)} has no source slot; name a slot")
                occupant = self._inv.at(dst)
                if occupant is not None:
                    raise DestinationFull(
                        f"{p.barcode} came from {self._label(dst)}, which now holds "
                        f"{occupant.barcode}; name a slot")
            self.move_cartridge(drive, dst)
            return dst

    def create_cartridge(self, barcode: str, at: Location | None = None, *,
                         worm: bool = False) -> Placement:
        """A new blank cartridge in slot/mail slot `at` (default: the first empty slot)."""
        label = parse_barcode(barcode)
        if label.cleaning and worm:
            raise InvalidRequest(f"{barcode} is a cleaning cartridge (CLN prefix); no WORM")
        with self.lock:
            existing = self._inv.find(barcode)
            if existing is not None:
                raise CartridgeExists(
                    f"cartridge {barcode} already exists ({self._label(existing.location)})")
            if at is None:
                free = self._inv.free(Kind.SLOT, self.geometry)
                if not free:
                    raise LibraryFull("no empty slot; name a mail slot or free a slot")
                at = free[0]
            self._check_location(at)
            if at.kind == Kind.DRIVE:
                raise InvalidRequest("new cartridges go into a slot or mail slot; "
                                     "load it into the drive afterwards")
            occupant = self._inv.at(at)
            if occupant is not None:
                raise DestinationFull(f"{self._label(at)} holds {occupant.barcode}")
            if self.source.exists(barcode):
                raise CartridgeExists(
                    f"cartridge {barcode} already exists in storage (outside the library)")
            self.source.create(barcode, worm=worm)
            placement = Placement(barcode, at, imported=at.kind == Kind.MAIL)
            new = self._inv.with_added(placement)
            try:
                self._save(new)
            except InventoryWriteFailed:
                self._forget(barcode)
                raise
            self._inv = new
            return placement

    def delete_cartridge(self, barcode: str, *, force: bool = False) -> CartridgeFacts:
        """Remove a cartridge from the library and from storage (here and in the bucket;
        its chunks become garbage for GC). Returns what it was.

        Refused while it is in a drive (unload it first: the drive holds it open and an
        initiator may be using it) and, without `force`, while it holds data. The
        inventory is written first: a crash before storage lets go of the cartridge
        brings it back into a free slot on the next start, never a library entry
        whose cartridge is gone.
        """
        with self.lock:
            facts = self.facts(barcode)
            p = facts.placement
            if p is not None and p.location.kind == Kind.DRIVE:
                raise InvalidRequest(f"{barcode} is in {self._label(p.location)}; unload it "
                                     "first (thurvtl changer unload)")
            if not force and facts.used_bytes:
                raise InvalidRequest(f"{barcode} holds {facts.used_bytes} bytes of data; "
                                     "delete it with --force to lose them for good")
            if p is not None:
                new = self._inv.without(barcode)
                self._save(new)
                self._inv = new
            try:
                self.source.delete(barcode)
            except CartridgeNotFound:
                pass  # only the inventory knew it: nothing more to remove
            except Exception as exc:
                log.error("cartridge %s left the library but storage could not delete it: %s",
                          barcode, exc)
                raise CartridgeUnavailable(
                    f"{barcode} left the library but storage could not delete it ({exc}); "
                    "the next start puts it back into a free slot") from exc
            return facts

    def restore_drives(self) -> list[str]:
        """Load each cartridge the inventory places in a drive (on start; the drive then
        reports 06/28/00). Returns one warning per drive that could not be loaded."""
        warnings = []
        with self.lock:
            for p in self._inv:
                if p.location.kind != Kind.DRIVE:
                    continue
                drive = self.drives[p.location.index]
                try:
                    drive.load(self._open(p.barcode))
                except (CartridgeUnavailable, DriveOccupied) as exc:
                    warnings.append(f"drive {p.location.index}: cannot reload {p.barcode}: {exc}")
        return warnings

    def facts(self, barcode: str) -> CartridgeFacts:
        """What is known about one cartridge, in the library or only in storage."""
        with self.lock:
            p = self._inv.find(barcode)
            if p is None and not self.source.exists(barcode):
                raise CartridgeNotFound(f"no cartridge {barcode}")
            medium = None
            loaded = False
            if p is not None and p.location.kind == Kind.DRIVE:
                medium = self.drives[p.location.index].medium
                loaded = medium is not None
            if loaded:
                return _facts(barcode, p, loaded, medium, self._local_only(barcode))
            try:
                medium = self.source.open(barcode)
            except Exception as exc:  # storage trouble: show what is known
                log.warning("cartridge %s: cannot open for info: %s", barcode, exc)
                return _facts(barcode, p, False, None, None)
            try:
                return _facts(barcode, p, False, medium, self._local_only(barcode))
            finally:
                self._release(barcode)

    def all_facts(self) -> list[CartridgeFacts]:
        with self.lock:
            placed = [p.barcode for p in self._inv]
            outside = sorted(set(self.source.list()) - set(placed))
            return [self.facts(b) for b in placed + outside]

    # ---- internals -------------------------------------------------------------------

    def _label(self, loc: Location) -> str:
        return self.geometry.label(loc)

    def _location(self, address: int) -> Location:
        kind = self.layout.type_of(address)
        if kind is None:
            raise InvalidElement(f"no element at address {address:#06x}")
        loc = self.elements.location(address)
        if loc is None or kind == ElementType.MEDIUM_TRANSPORT:
            raise InvalidElement("the robot (medium transport) does not store cartridges")
        return loc

    def _check_location(self, loc: Location) -> None:
        if loc not in self.geometry:
            raise InvalidElement(f"{loc.kind.value} {loc.index} is outside the library")

    def _check_export(self, dst: Location) -> None:
        if self._prevent and dst.kind == Kind.MAIL:
            raise RemovalPrevented(
                f"the changer is locked (PREVENT MEDIUM REMOVAL): no export to {self._label(dst)}")

    def _open(self, barcode: str) -> Medium:
        try:
            return self.source.open(barcode)
        except CartridgeNotFound as exc:
            raise CartridgeUnavailable(f"cartridge {barcode} is not in storage") from exc
        except Exception as exc:  # storage trouble of any kind: no move, HARDWARE ERROR
            log.exception("cannot open cartridge %s", barcode)
            raise CartridgeUnavailable(f"cannot open cartridge {barcode}: {exc}") from exc

    def _save(self, inventory: Inventory) -> None:
        try:
            self._file.save(inventory)
        except OSError as exc:
            log.error("cannot write %s: %s", self._file.path, exc)
            raise InventoryWriteFailed(f"cannot write the inventory: {exc}") from exc

    def _forget(self, barcode: str) -> None:
        try:
            self.source.delete(barcode)
        except Exception as exc:  # the next start adopts it into a free slot
            log.warning("cartridge %s stays in storage outside the library: %s", barcode, exc)

    def _release(self, barcode: str) -> None:
        try:
            self.source.release(barcode)
        except Exception as exc:  # the move itself is done and durable
            log.warning("cartridge %s: storage could not release it: %s", barcode, exc)

    def _local_only(self, barcode: str) -> int | None:
        try:
            return self.source.local_only_bytes(barcode)
        except Exception as exc:
            log.warning("cartridge %s: local-only bytes unknown: %s", barcode, exc)
            return None

    def _transition(self, new: Inventory) -> None:
        """Make the drives match `new`, persist it, adopt it; on failure undo the drives."""
        old = self._inv
        unloaded: list[tuple[int, Medium | None]] = []
        loaded: list[int] = []
        media: dict[str, Medium] = {}
        try:
            for i, drive in enumerate(self.drives):
                before, after = old.at(Location(Kind.DRIVE, i)), new.at(Location(Kind.DRIVE, i))
                if before is None or (after is not None and after.barcode == before.barcode):
                    continue
                try:
                    medium = drive.unload()
                except MediumRemovalPrevented as err:
                    raise RemovalPrevented(
                        f"drive {i} is locked (PREVENT MEDIUM REMOVAL) with {before.barcode}"
                    ) from err
                unloaded.append((i, medium))
                if medium is not None:
                    media[before.barcode] = medium
            for i, drive in enumerate(self.drives):
                before, after = old.at(Location(Kind.DRIVE, i)), new.at(Location(Kind.DRIVE, i))
                if after is None or (before is not None and before.barcode == after.barcode):
                    continue
                medium = media.pop(after.barcode, None) or self._open(after.barcode)
                try:
                    drive.load(medium)
                except DriveOccupied as err:
                    raise DestinationFull(f"drive {i} already holds a cartridge") from err
                loaded.append(i)
            self._save(new)
        except BaseException:
            self._undo(unloaded, loaded)
            raise
        self._inv = new
        for barcode in media:  # unloaded and not loaded into another drive
            self._release(barcode)

    def _undo(self, unloaded: list[tuple[int, Medium | None]], loaded: list[int]) -> None:
        for i in reversed(loaded):
            try:
                self.drives[i].unload()
            except Exception as exc:
                log.error("drive %d: cannot undo a load: %s", i, exc)
        for i, medium in reversed(unloaded):
            if medium is None:
                continue
            try:
                self.drives[i].load(medium)
            except Exception as exc:
                log.error("drive %d: cannot undo an unload of %s: %s", i, medium.barcode, exc)


def _facts(barcode: str, p: Placement | None, loaded: bool, medium: Medium | None,
           local_only: int | None) -> CartridgeFacts:
    def read(attr: str) -> object:
        try:
            return getattr(medium, attr) if medium is not None else None
        except Exception:  # a medium mid-failure still gets listed
            return None

    used = None
    if medium is not None:
        try:
            parts = len(medium.partition_capacities())  # type: ignore[attr-defined]
            used = sum(medium.partition_used(i) for i in range(parts))  # type: ignore[attr-defined]
        except Exception:
            used = None
    loads = read("load_count")
    # The medium counts completed loads; while it sits in a drive this mount counts
    # too, as the drive's MAM (0003h) and log page 17h report it.
    if isinstance(loads, int) and loaded:
        loads += 1
    return CartridgeFacts(
        barcode=barcode,
        placement=p,
        loaded=loaded,
        worm=read("worm"),  # type: ignore[arg-type]
        cleaning=parse_barcode(barcode).cleaning,
        write_protected=read("write_protected"),  # type: ignore[arg-type]
        capacity_bytes=read("capacity_bytes"),  # type: ignore[arg-type]
        used_bytes=used,
        load_count=loads,  # type: ignore[arg-type]
        local_only_bytes=local_only,
    )


def open_library(
    data_dir: Path,
    config: LibraryConfig,
    identity: LibraryIdentity,
    source: CartridgeSource,
    drives: Sequence[DriveLink],
) -> LibraryChanger:
    """Load and reconcile the inventory for the configured library (on start).

    ShrinkRefused when the configured library is too small for the inventory.
    Cartridges storage holds but the inventory does not (a crash between creating a
    cartridge and recording it, or a data_dir restored from the bucket) are placed in
    free slots.
    """
    geometry = geometry_of(config)
    elements = ElementMap(geometry, identity.element_bases or ElementBases.standard(geometry))
    inventory_file = InventoryFile(data_dir)
    loaded = inventory_file.load()
    inventory = loaded.fit(geometry)
    placed = inventory.barcodes()
    strays = [b for b in source.list() if b not in placed]
    free = inventory.free(Kind.SLOT, geometry)
    for barcode, loc in zip(strays, free, strict=False):
        log.warning("cartridge %s was in storage but not in the inventory: placed in %s",
                    barcode, geometry.label(loc))
        inventory = inventory.with_added(Placement(barcode, loc))
    for barcode in strays[len(free):]:
        log.warning("cartridge %s is in storage but no slot is free for it", barcode)
    for p in inventory:
        if not source.exists(p.barcode):
            log.warning("cartridge %s (%s) is in the inventory but not in storage",
                        p.barcode, geometry.label(p.location))
    if inventory != loaded or not inventory_file.path.exists():
        inventory_file.save(inventory)
    return LibraryChanger(
        elements=elements,
        inventory=inventory,
        inventory_file=inventory_file,
        source=source,
        drives=drives,
    )

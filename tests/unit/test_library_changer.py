"""The persistent changer model: moves, exchanges, errors that change nothing, mail slots,
PREVENT, drive loads, durability and restore after a restart."""

from __future__ import annotations

import contextlib
import random
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from handlers.scsi import (
    CHECK_CONDITION,
    GOOD,
    DestinationFull,
    DeviceIdentity,
    InvalidElement,
    InvalidRequest,
    MediumChanger,
    RemovalPrevented,
    Sense,
    SourceEmpty,
    TapeDrive,
    changer_identity,
    parse_sense,
    tape_drive_identity,
)
from handlers.scsi.ssc import DriveOccupied, MediumRemovalPrevented
from thur.config import LibraryConfig
from thur.library import (
    BarcodeError,
    CartridgeExists,
    CartridgeUnavailable,
    InventoryFile,
    InventoryWriteFailed,
    Kind,
    LibraryChanger,
    LibraryFull,
    Location,
    MemoryCartridgeSource,
    load_or_mint,
    open_library,
)
from thur.tape import Medium

# Standard bases for 6 slots, 2 mail slots, 2 drives.
DRIVE0, DRIVE1, MAIL0, MAIL1, SLOT0 = 0x100, 0x101, 0x200, 0x201, 0x400


def slot(i: int) -> Location:
    return Location(Kind.SLOT, i)


def mail(i: int) -> Location:
    return Location(Kind.MAIL, i)


def drive(i: int) -> Location:
    return Location(Kind.DRIVE, i)


@dataclass
class FakeDrive:
    """The DriveLink side of a drive LU, with PREVENT as a flag."""

    identity: DeviceIdentity
    medium: Medium | None = None
    prevent: bool = False
    loads: int = 0

    @classmethod
    def numbered(cls, i: int) -> FakeDrive:
        return cls(tape_drive_identity(f"TD{i:08d}"))

    def load(self, medium: Medium) -> None:
        if self.medium is not None:
            raise DriveOccupied(self.identity.serial)
        self.medium = medium
        self.loads += 1

    def unload(self) -> Medium | None:
        if self.medium is not None and self.prevent:
            raise MediumRemovalPrevented(self.identity.serial)
        medium, self.medium = self.medium, None
        return medium


def make_library(tmp_path: Path, drives: list | None = None, *, slots: int = 6,
                 mail_slots: int = 2, source: MemoryCartridgeSource | None = None
                 ) -> LibraryChanger:
    config = LibraryConfig(num_slots=slots, num_mail_slots=mail_slots,
                           num_drives=len(drives) if drives else 2)
    drives = drives if drives is not None else [FakeDrive.numbered(i) for i in range(2)]
    source = source if source is not None else MemoryCartridgeSource()
    return open_library(tmp_path, config, load_or_mint(tmp_path, config), source, drives)


def stocked(tmp_path: Path, drives: list | None = None) -> LibraryChanger:
    lib = make_library(tmp_path, drives)
    lib.create_cartridge("AAA000L8", slot(0))
    lib.create_cartridge("AAA001L8", slot(1))
    return lib


def where(lib: LibraryChanger) -> dict[str, Location]:
    return {p.barcode: p.location for p in lib.inventory}


def on_disk(tmp_path: Path) -> dict[str, Location]:
    return {p.barcode: p.location for p in InventoryFile(tmp_path).load()}


def test_move_persists_before_returning_and_records_the_source(tmp_path: Path) -> None:
    lib = stocked(tmp_path)
    lib.move(SLOT0, SLOT0 + 5)
    assert where(lib)["AAA000L8"] == slot(5) == on_disk(tmp_path)["AAA000L8"]
    status = lib.status(SLOT0 + 5)
    assert status.full and status.barcode == "AAA000L8" and status.source == SLOT0
    assert not lib.status(SLOT0).full
    lib.move(SLOT0 + 5, SLOT0 + 5)  # to itself: nothing to do, not an error
    assert where(lib)["AAA000L8"] == slot(5)


def test_load_into_a_drive_and_out_again(tmp_path: Path) -> None:
    drives = [FakeDrive.numbered(i) for i in range(2)]
    lib = stocked(tmp_path, drives)
    lib.move(SLOT0, DRIVE1)
    assert drives[1].medium is not None and drives[1].medium.barcode == "AAA000L8"
    assert lib.status(DRIVE1).drive == drives[1].identity
    lib.move(DRIVE1, DRIVE0)  # drive to drive: unloaded from one, loaded into the other
    assert drives[1].medium is None and drives[0].medium.barcode == "AAA000L8"
    lib.move(DRIVE0, SLOT0 + 3)
    assert drives[0].medium is None and on_disk(tmp_path)["AAA000L8"] == slot(3)


@pytest.mark.parametrize(("src", "dst", "error"), [
    (SLOT0 + 2, SLOT0 + 3, SourceEmpty),  # empty source
    (SLOT0, DRIVE0, DestinationFull),  # full destination
    (SLOT0, 0x999, InvalidElement),  # no such element
    (0x999, SLOT0 + 3, InvalidElement),
    (SLOT0, 0x000, InvalidElement),  # the transport does not store cartridges
    (SLOT0, DRIVE0 + 2, InvalidElement),  # one past the last drive
])
def test_errors_leave_the_inventory_and_its_file_alone(tmp_path: Path, src: int, dst: int,
                                                       error: type) -> None:
    lib = stocked(tmp_path)
    lib.move(SLOT0 + 1, DRIVE0)
    before, file_before = lib.inventory, (tmp_path / "inventory.json").read_bytes()
    with pytest.raises(error):
        lib.move(src, dst)
    assert lib.inventory == before
    assert (tmp_path / "inventory.json").read_bytes() == file_before


def test_full_drive_is_a_full_destination(tmp_path: Path) -> None:
    lib = stocked(tmp_path)
    lib.move(SLOT0, DRIVE0)
    with pytest.raises(DestinationFull, match="drive 0 holds AAA000L8"):
        lib.move(SLOT0 + 1, DRIVE0)


def test_exchange_moves_two_cartridges_at_once(tmp_path: Path) -> None:
    drives = [FakeDrive.numbered(i) for i in range(2)]
    lib = stocked(tmp_path, drives)
    lib.move(SLOT0 + 1, DRIVE0)
    # AAA000L8 goes into drive 0; the cartridge there goes to slot 5.
    lib.exchange(SLOT0, DRIVE0, SLOT0 + 4)
    assert where(lib) == {"AAA000L8": drive(0), "AAA001L8": slot(4)} == on_disk(tmp_path)
    assert drives[0].medium.barcode == "AAA000L8"
    # A swap: the second destination is the source.
    lib.exchange(SLOT0 + 4, DRIVE0, SLOT0 + 4)
    assert where(lib) == {"AAA001L8": drive(0), "AAA000L8": slot(4)}
    assert drives[0].medium.barcode == "AAA001L8"


def test_exchange_errors(tmp_path: Path) -> None:
    lib = stocked(tmp_path)
    before = lib.inventory
    with pytest.raises(SourceEmpty):
        lib.exchange(SLOT0 + 3, SLOT0, SLOT0 + 4)
    with pytest.raises(SourceEmpty):
        lib.exchange(SLOT0, SLOT0 + 3, SLOT0 + 4)
    lib.create_cartridge("AAA002L8", slot(4))
    with pytest.raises(DestinationFull):
        lib.exchange(SLOT0, SLOT0 + 1, SLOT0 + 4)
    with pytest.raises(InvalidRequest):
        lib.exchange(SLOT0, SLOT0, SLOT0 + 4)
    with pytest.raises(InvalidRequest):
        lib.exchange(SLOT0, SLOT0 + 1, SLOT0 + 1)
    assert where(lib) == {**{p.barcode: p.location for p in before}, "AAA002L8": slot(4)}


def test_mail_slots_import_and_export_under_prevent(tmp_path: Path) -> None:
    lib = make_library(tmp_path)
    placed = lib.create_cartridge("IMP001L8", mail(1))
    assert placed.imported and lib.status(MAIL1).imported
    lib.set_prevent_removal(True)
    # Imports (mail slot -> library) are allowed while the changer is locked ...
    lib.move(MAIL1, SLOT0)
    assert not lib.status(SLOT0).imported
    # ... exports are not, by MOVE or by EXCHANGE.
    with pytest.raises(RemovalPrevented, match="changer is locked"):
        lib.move(SLOT0, MAIL0)
    lib.create_cartridge("AAA001L8", slot(1))
    with pytest.raises(RemovalPrevented):
        lib.exchange(SLOT0, SLOT0 + 1, MAIL0)
    assert where(lib) == {"IMP001L8": slot(0), "AAA001L8": slot(1)} == on_disk(tmp_path)
    lib.set_prevent_removal(False)
    lib.move(SLOT0, MAIL0)
    assert where(lib)["IMP001L8"] == mail(0)


def test_a_prevented_drive_keeps_its_cartridge(tmp_path: Path) -> None:
    drives = [FakeDrive.numbered(i) for i in range(2)]
    lib = stocked(tmp_path, drives)
    lib.move(SLOT0, DRIVE0)
    lib.move(SLOT0 + 1, DRIVE1)
    drives[0].prevent = True
    for attempt in (lambda: lib.move(DRIVE0, SLOT0),
                    lambda: lib.exchange(DRIVE1, DRIVE0, SLOT0)):
        with pytest.raises(RemovalPrevented, match="drive 0 is locked"):
            attempt()
        # The exchange had unloaded drive 1 first: it is loaded again.
        assert drives[0].medium.barcode == "AAA000L8"
        assert drives[1].medium.barcode == "AAA001L8"
        assert where(lib) == {"AAA000L8": drive(0), "AAA001L8": drive(1)} == on_disk(tmp_path)


def test_failed_inventory_write_undoes_the_drives(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    drives = [FakeDrive.numbered(i) for i in range(2)]
    lib = stocked(tmp_path, drives)
    lib.move(SLOT0, DRIVE0)

    def disk_full(self: InventoryFile, inventory: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(InventoryFile, "save", disk_full)
    with pytest.raises(InventoryWriteFailed, match="No space left"):
        lib.move(DRIVE0, DRIVE1)
    assert drives[0].medium.barcode == "AAA000L8" and drives[1].medium is None
    with pytest.raises(InventoryWriteFailed):
        lib.create_cartridge("NEW001L8")
    assert not lib.source.exists("NEW001L8")
    assert where(lib) == {"AAA000L8": drive(0), "AAA001L8": slot(1)}


def test_storage_failure_on_load_changes_nothing(tmp_path: Path) -> None:
    class Failing(MemoryCartridgeSource):
        def open(self, barcode: str) -> Medium:
            raise OSError("bucket unreachable")

    drives = [FakeDrive.numbered(i) for i in range(2)]
    lib = make_library(tmp_path, drives, source=Failing())
    lib.create_cartridge("AAA000L8", slot(0))
    with pytest.raises(CartridgeUnavailable, match="bucket unreachable") as err:
        lib.move(SLOT0, DRIVE0)
    assert err.value.sense == Sense.HARDWARE_ERROR
    assert drives[0].medium is None and where(lib) == {"AAA000L8": slot(0)}


def test_unload_returns_to_the_source_slot(tmp_path: Path) -> None:
    lib = stocked(tmp_path)
    lib.move_cartridge(slot(1), drive(1))
    assert lib.unload_drive(drive(1)) == slot(1)
    lib.move_cartridge(slot(1), drive(1))
    lib.move_cartridge(slot(0), slot(1))  # someone took its slot
    with pytest.raises(DestinationFull, match="came from slot 2, which now holds AAA000L8"):
        lib.unload_drive(drive(1))
    assert lib.unload_drive(drive(1), mail(0)) == mail(0)
    with pytest.raises(SourceEmpty, match="drive 1 is empty"):
        lib.unload_drive(drive(1))


def test_create_cartridge_rules(tmp_path: Path) -> None:
    lib = make_library(tmp_path, slots=2, mail_slots=1)
    assert lib.create_cartridge("AAA000L8").location == slot(0)  # first empty slot
    assert lib.create_cartridge("WORM01L8", worm=True).location == slot(1)
    with pytest.raises(CartridgeExists, match=r"AAA000L8 already exists \(slot 1\)"):
        lib.create_cartridge("AAA000L8", mail(0))
    with pytest.raises(LibraryFull, match="no empty slot"):
        lib.create_cartridge("AAA002L8")
    with pytest.raises(DestinationFull, match="slot 2 holds WORM01L8"):
        lib.create_cartridge("AAA002L8", slot(1))
    with pytest.raises(InvalidRequest, match="slot or mail slot"):
        lib.create_cartridge("AAA002L8", drive(0))
    with pytest.raises(InvalidRequest, match="cleaning"):
        lib.create_cartridge("CLN001L8", mail(0), worm=True)
    with pytest.raises(BarcodeError):
        lib.create_cartridge("bad", mail(0))
    with pytest.raises(InvalidElement):
        lib.create_cartridge("AAA002L8", slot(7))
    lib.source.create("LOOSE1L8")
    with pytest.raises(CartridgeExists, match="outside the library"):
        lib.create_cartridge("LOOSE1L8", mail(0))
    lib.create_cartridge("CLN001L8", mail(0))
    facts = {f.barcode: f for f in lib.all_facts()}
    assert facts["WORM01L8"].worm and not facts["AAA000L8"].worm
    assert facts["CLN001L8"].cleaning and facts["CLN001L8"].write_protected
    assert facts["LOOSE1L8"].placement is None


def test_facts_of_a_loaded_cartridge(tmp_path: Path) -> None:
    drives = [FakeDrive.numbered(i) for i in range(2)]
    lib = stocked(tmp_path, drives)
    lib.move(SLOT0, DRIVE0)
    drives[0].medium.write(b"x" * 1000)
    facts = lib.facts("AAA000L8")
    assert facts.loaded and facts.used_bytes == 1000
    assert facts.capacity_bytes == 12 * 10**12 and facts.local_only_bytes is None


def test_restart_reloads_the_drives_from_the_inventory(tmp_path: Path) -> None:
    source = MemoryCartridgeSource()
    lib = make_library(tmp_path, source=source)
    lib.create_cartridge("AAA000L8", slot(0))
    lib.move(SLOT0, DRIVE1)
    # A new process: fresh drive engines, the same data_dir and storage.
    drives = [TapeDrive(tape_drive_identity(f"TD{i:08d}")) for i in range(2)]
    again = make_library(tmp_path, drives, source=source)
    assert again.restore_drives() == []
    assert drives[0].medium is None and drives[1].medium.barcode == "AAA000L8"
    codes = []
    for _ in range(3):
        resp = drives[1].execute(bytes(6), None)
        codes.append(parse_sense(bytes(resp.sense)).code if resp.status else None)
    assert codes == [Sense.POWER_ON_RESET, Sense.MEDIUM_MAY_HAVE_CHANGED, None]


def test_restore_reports_cartridges_storage_lost(tmp_path: Path) -> None:
    lib = make_library(tmp_path)
    lib.create_cartridge("AAA000L8", slot(0))
    lib.move(SLOT0, DRIVE0)
    drives = [FakeDrive.numbered(i) for i in range(2)]
    again = make_library(tmp_path, drives, source=MemoryCartridgeSource())
    assert "not in storage" in again.restore_drives()[0]
    assert again.status(DRIVE0).full  # still where the inventory says; it can be moved out
    again.move(DRIVE0, SLOT0)
    blank = make_library(tmp_path, drives, source=MemoryCartridgeSource(blank_on_open=True))
    blank.move(SLOT0, DRIVE0)
    assert drives[0].medium.barcode == "AAA000L8"


# ---- through the changer LU ------------------------------------------------------------


def _move_cdb(src: int, dst: int) -> bytes:
    return bytes([0xA5, 0, 0, 0]) + struct.pack(">HH", src, dst) + bytes(4)


def test_scsi_moves_report_sense_and_load_the_drive_lu(tmp_path: Path) -> None:
    drives = [TapeDrive(tape_drive_identity(f"TD{i:08d}")) for i in range(2)]
    lib = stocked(tmp_path, drives)
    changer = MediumChanger(changer_identity("TL00000001"), lib)
    changer.execute(bytes(6), None)  # POWER ON
    for d in drives:
        d.execute(bytes(6), None)
    assert changer.execute(_move_cdb(SLOT0, DRIVE0), None).status == GOOD
    tur = drives[0].execute(bytes(6), None)
    assert parse_sense(bytes(tur.sense)).code == Sense.MEDIUM_MAY_HAVE_CHANGED
    for src, dst, code in ((SLOT0 + 4, SLOT0 + 5, Sense.SOURCE_EMPTY),
                           (SLOT0 + 1, DRIVE0, Sense.DESTINATION_FULL),
                           (SLOT0 + 1, 0x7777, Sense.INVALID_ELEMENT)):
        resp = changer.execute(_move_cdb(src, dst), None)
        assert resp.status == CHECK_CONDITION
        assert parse_sense(bytes(resp.sense)).code == code
    drives[0].execute(bytes([0x1E, 0, 0, 0, 1, 0]), None)  # PREVENT on the drive
    resp = changer.execute(_move_cdb(DRIVE0, SLOT0), None)
    assert parse_sense(bytes(resp.sense)).code == Sense.REMOVAL_PREVENTED
    assert where(lib) == {"AAA000L8": drive(0), "AAA001L8": slot(1)} == on_disk(tmp_path)
    drives[0].execute(bytes([0x1E, 0, 0, 0, 0, 0]), None)
    assert changer.execute(_move_cdb(DRIVE0, SLOT0), None).status == GOOD
    assert drives[0].medium is None


def test_concurrent_moves_keep_every_cartridge_exactly_once(tmp_path: Path) -> None:
    lib = make_library(tmp_path, slots=12, mail_slots=2)
    for i in range(6):
        lib.create_cartridge(f"CON{i:03d}L8", slot(i))
    addresses = [DRIVE0, DRIVE1, MAIL0, MAIL1] + [SLOT0 + i for i in range(12)]

    def shuffle(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(150):
            with contextlib.suppress(SourceEmpty, DestinationFull):
                lib.move(rng.choice(addresses), rng.choice(addresses))

    threads = [threading.Thread(target=shuffle, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(where(lib)) == [f"CON{i:03d}L8" for i in range(6)]
    assert where(lib) == on_disk(tmp_path)
    for i, d in enumerate(lib.drives):
        p = lib.inventory.at(drive(i))
        assert (d.medium.barcode if d.medium else None) == (p.barcode if p else None)


def test_storage_is_told_when_a_cartridge_leaves_the_drives(tmp_path: Path) -> None:
    class Recording(MemoryCartridgeSource):
        def __init__(self) -> None:
            super().__init__()
            self.released: list[str] = []

        def release(self, barcode: str) -> None:
            self.released.append(barcode)

    source = Recording()
    lib = make_library(tmp_path, source=source)
    lib.create_cartridge("AAA000L8", slot(0))
    lib.move(SLOT0, DRIVE0)
    lib.move(DRIVE0, DRIVE1)  # still in a drive: storage keeps it open
    assert source.released == []
    lib.facts("AAA000L8")  # read from the drive's medium, not opened again
    assert source.released == []
    lib.move(DRIVE1, SLOT0 + 2)
    assert source.released == ["AAA000L8"]
    lib.facts("AAA000L8")  # opened for info, released after
    assert source.released == ["AAA000L8", "AAA000L8"]



def test_load_count_includes_the_current_mount_like_the_drive_reports(tmp_path: Path) -> None:
    lib = stocked(tmp_path)
    assert lib.facts("AAA000L8").load_count == 0
    lib.move(SLOT0, DRIVE0)
    # MAM 0003h and log page 17h count the mount in progress; so does the library.
    assert lib.facts("AAA000L8").load_count == 1

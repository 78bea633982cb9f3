"""Random MOVE/EXCHANGE MEDIUM sequences against a ten-line model of the library.

Whatever the initiator sends (valid or not, locked or not, with restarts in between),
the persisted inventory equals the model, every cartridge is in exactly one element,
and each drive LU holds exactly the cartridge the inventory places in it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from handlers.scsi import (
    ChangerError,
    DestinationFull,
    InvalidElement,
    InvalidRequest,
    RemovalPrevented,
    SourceEmpty,
)
from tests.unit.test_library_changer import FakeDrive, make_library
from thur.library import InventoryFile

DRIVES = [0x100, 0x101]
MAIL = [0x200, 0x201]
SLOTS = [0x400 + i for i in range(6)]
VALID = DRIVES + MAIL + SLOTS
# The transport and a few addresses outside every range.
ADDRESSES = st.sampled_from(VALID + [0x000, 0x102, 0x202, 0x406, 0xFFFF])
BARCODES = [f"PRP{i:03d}L8" for i in range(5)]


class LibraryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="thur-lib-"))
        self.drives = [FakeDrive.numbered(i) for i in range(2)]
        self.lib = make_library(self.dir, self.drives)
        self.model: dict[int, str] = {}  # address -> barcode
        for i, barcode in enumerate(BARCODES):
            self.lib.create_cartridge(barcode)
            self.model[SLOTS[i]] = barcode
        self.locked = False

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _held(self, address: int) -> bool:
        return address in DRIVES and self.drives[DRIVES.index(address)].prevent

    def _expect_move(self, src: int, dst: int) -> type[ChangerError] | None:
        if src not in VALID or dst not in VALID:
            return InvalidElement
        if src not in self.model:
            return SourceEmpty
        if src == dst:
            return None
        if dst in self.model:
            return DestinationFull
        if (self.locked and dst in MAIL) or self._held(src):
            return RemovalPrevented
        return None

    def _expect_exchange(self, src: int, one: int, two: int) -> type[ChangerError] | None:
        if any(a not in VALID for a in (src, one, two)):
            return InvalidElement
        if one in (src, two):
            return InvalidRequest
        if src not in self.model or one not in self.model:
            return SourceEmpty
        if two != src and two in self.model:
            return DestinationFull
        if (self.locked and (one in MAIL or two in MAIL)) or self._held(src) or self._held(one):
            return RemovalPrevented
        return None

    def _full(self, data: st.DataObject) -> int:
        # Mostly a full element, so most moves get past the source check.
        full = sorted(self.model)
        return data.draw(st.sampled_from(full) if full else st.sampled_from(VALID))

    def _do_move(self, src: int, dst: int) -> None:
        expected = self._expect_move(src, dst)
        try:
            self.lib.move(src, dst)
        except ChangerError as err:
            assert type(err) is expected, (src, dst, err)
            return
        assert expected is None, (src, dst)
        self.model[dst] = self.model.pop(src)

    def _do_exchange(self, src: int, one: int, two: int) -> None:
        expected = self._expect_exchange(src, one, two)
        try:
            self.lib.exchange(src, one, two)
        except ChangerError as err:
            assert type(err) is expected, (src, one, two, err)
            return
        assert expected is None, (src, one, two)
        moving, displaced = self.model.pop(src), self.model.pop(one)
        self.model[one], self.model[two] = moving, displaced

    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        self._do_move(self._full(data), data.draw(st.sampled_from(VALID)))

    @rule(data=st.data())
    def exchange(self, data: st.DataObject) -> None:
        self._do_exchange(self._full(data), self._full(data), data.draw(st.sampled_from(VALID)))

    @rule(data=st.data())
    def export_or_unload(self, data: st.DataObject) -> None:
        """The moves PREVENT can refuse: into a mail slot, out of a drive."""
        if data.draw(st.booleans()):
            self._do_move(self._full(data), data.draw(st.sampled_from(MAIL)))
        else:
            self._do_move(data.draw(st.sampled_from(DRIVES)), data.draw(st.sampled_from(SLOTS)))

    @rule(src=ADDRESSES, dst=ADDRESSES)
    def move_anything(self, src: int, dst: int) -> None:
        self._do_move(src, dst)

    @rule(src=ADDRESSES, one=ADDRESSES, two=ADDRESSES)
    def exchange_anything(self, src: int, one: int, two: int) -> None:
        self._do_exchange(src, one, two)

    @rule(locked=st.booleans())
    def lock_changer(self, locked: bool) -> None:
        self.lib.set_prevent_removal(locked)
        self.locked = locked

    @rule(index=st.integers(0, 1), held=st.booleans())
    def hold_drive(self, index: int, held: bool) -> None:
        self.drives[index].prevent = held

    @rule()
    def restart(self) -> None:
        """kill -9 and start again: new drive engines, inventory from disk, same storage."""
        self.drives = [FakeDrive.numbered(i) for i in range(2)]
        self.lib = make_library(self.dir, self.drives, source=self.lib.source)
        assert self.lib.restore_drives() == []
        self.locked = False  # PREVENT does not survive a reset

    @invariant()
    def inventory_matches_the_model(self) -> None:
        placed = {self.lib.elements.address(p.location): p.barcode for p in self.lib.inventory}
        assert placed == self.model
        assert sorted(self.model.values()) == BARCODES  # each exactly once
        on_disk = InventoryFile(self.dir).load()
        assert on_disk == self.lib.inventory
        for address, d in zip(DRIVES, self.drives, strict=True):
            assert (d.medium.barcode if d.medium else None) == self.model.get(address)


LibraryMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40,
                                            deadline=None)
TestLibraryMachine = LibraryMachine.TestCase

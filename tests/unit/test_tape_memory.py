"""The reference cartridge passes the Medium contract."""

from tests.unit.tape_contract import MB, MediumContract
from thur.tape import Medium, MemoryCartridge


class TestMemoryCartridge(MediumContract):
    def make(self, capacity: int = 100 * MB, worm: bool = False) -> Medium:
        return MemoryCartridge("TST001L8", capacity, worm=worm)

"""The `Medium` contract as tests. Every implementation subclasses `MediumContract`
and provides `make(capacity, worm)`; the semantics here are what the drive relies on.
"""

from __future__ import annotations

import pytest

from thur.tape import (
    EndOfData,
    InvalidPartition,
    Medium,
    SpaceStop,
    VolumeOverflow,
    WormViolation,
    early_warning_margin,
)

MB = 1_000_000


class MediumContract:
    def make(self, capacity: int = 100 * MB, worm: bool = False) -> Medium:
        raise NotImplementedError

    def written(self, records: list[bytes | None], capacity: int = 100 * MB) -> Medium:
        m = self.make(capacity)
        for r in records:
            if r is None:
                m.write_filemarks(1)
            else:
                m.write(r)
        m.locate(0, 0)
        return m

    # -- reading and writing -------------------------------------------------------

    def test_fresh_cartridge_is_at_bop_and_eod(self) -> None:
        m = self.make()
        p = m.position()
        assert (p.partition, p.object_id, p.file_id, p.bop, p.eod) == (0, 0, 0, True, True)
        with pytest.raises(EndOfData):
            m.read()
        assert m.position().object_id == 0

    def test_records_and_filemarks_read_back_in_order(self) -> None:
        m = self.written([b"a" * 10, b"bb", None, b"c" * 70000, None, None])
        assert m.read() == b"a" * 10
        assert m.read() == b"bb"
        assert m.read() is None
        assert m.position().file_id == 1
        assert m.read() == b"c" * 70000
        assert m.read() is None and m.read() is None
        p = m.position()
        assert (p.object_id, p.file_id, p.eod) == (6, 3, True)
        with pytest.raises(EndOfData):
            m.read()

    def test_empty_and_large_records(self) -> None:
        big = bytes(range(256)) * 8192  # 2 MiB
        m = self.written([b"x", big, b"y"])
        assert [m.read(), m.read(), m.read()] == [b"x", big, b"y"]

    def test_write_in_the_middle_truncates(self) -> None:
        m = self.written([b"1", b"2", None, b"3", b"4"])
        m.locate(0, 2)
        m.write(b"new")
        assert m.position().eod
        m.locate(0, 0)
        assert [m.read(), m.read(), m.read()] == [b"1", b"2", b"new"]
        with pytest.raises(EndOfData):
            m.read()
        assert m.partition_used(0) == 5

    def test_filemark_in_the_middle_truncates(self) -> None:
        m = self.written([b"1", b"2", b"3"])
        m.locate(0, 1)
        m.write_filemarks(1)
        m.locate(0, 0)
        assert [m.read(), m.read()] == [b"1", None]
        assert m.position().eod

    def test_write_filemarks_zero_is_a_flush(self) -> None:
        m = self.make()
        m.write(b"r")
        m.write_filemarks(0)
        assert m.position().object_id == 1

    def test_encrypted_flag_is_kept_per_record(self) -> None:
        m = self.make()
        assert m.last_read_encrypted() is False
        m.write(b"plain")
        m.write(b"sealed" * 100, encrypted=True)
        m.write_filemarks(1)
        m.write(b"again", encrypted=False)
        assert m.next_encrypted() is None  # at EOD
        m.locate(0, 0)
        assert m.next_encrypted() is False
        assert m.read() == b"plain" and m.last_read_encrypted() is False
        assert m.next_encrypted() is True
        assert m.position().object_id == 1  # asking does not move
        assert m.read() == b"sealed" * 100 and m.last_read_encrypted() is True
        assert m.partition_used(0) == 5 + 600 + 5  # the flag takes no capacity
        assert m.next_encrypted() is None  # a filemark
        assert m.read() is None and m.last_read_encrypted() is False
        assert m.read() == b"again" and m.last_read_encrypted() is False
        # Overwriting an encrypted record with a plain one drops the flag.
        m.locate(0, 1)
        m.write(b"now plain")
        m.locate(0, 1)
        assert m.next_encrypted() is False
        assert m.read() == b"now plain" and not m.last_read_encrypted()

    # -- positioning ---------------------------------------------------------------

    def test_locate_and_past_eod(self) -> None:
        m = self.written([b"a", None, b"b"])
        m.locate(0, 2)
        assert m.read() == b"b"
        with pytest.raises(EndOfData):
            m.locate(0, 10)
        assert m.position().object_id == 3 and m.position().eod
        with pytest.raises(InvalidPartition):
            m.locate(1, 0)
        assert m.position().object_id == 3

    def test_space_records_forward_stops_after_filemark(self) -> None:
        m = self.written([b"a", b"b", None, b"c"])
        r = m.space_records(5)
        assert (r.residue, r.stop) == (3, SpaceStop.FILEMARK)
        assert m.position().object_id == 3
        r = m.space_records(5)
        assert (r.residue, r.stop) == (4, SpaceStop.EOD)
        assert m.position().eod

    def test_space_records_backward(self) -> None:
        m = self.written([b"a", None, b"b", b"c"])
        m.space_eod()
        r = m.space_records(-1)
        assert r.stop is None and m.position().object_id == 3
        r = m.space_records(-5)
        # b crossed, then the filemark stops it (not counted): position on its BOP side.
        assert (r.residue, r.stop) == (4, SpaceStop.FILEMARK)
        assert m.position().object_id == 1
        r = m.space_records(-5)
        assert (r.residue, r.stop) == (4, SpaceStop.BOP)
        assert m.position().bop

    def test_space_filemarks(self) -> None:
        m = self.written([b"a", None, b"b", None, b"c", None])
        r = m.space_filemarks(2)
        assert r.stop is None and m.position().object_id == 4
        assert m.position().file_id == 2
        r = m.space_filemarks(5)
        assert (r.residue, r.stop) == (4, SpaceStop.EOD)
        r = m.space_filemarks(-1)  # back over the last filemark: BOP side of it
        assert r.stop is None and m.position().object_id == 5
        r = m.space_filemarks(-5)
        assert (r.residue, r.stop) == (3, SpaceStop.BOP)
        assert m.space_filemarks(0).stop is None

    def test_space_zero_records_is_a_no_op(self) -> None:
        m = self.written([b"a"])
        assert m.space_records(0).stop is None and m.position().object_id == 0

    # -- capacity ------------------------------------------------------------------

    def test_early_warning_then_overflow(self) -> None:
        cap = 1 * MB
        m = self.make(cap)
        margin = early_warning_margin(cap)
        assert m.write(b"x" * (cap - margin - 10)) is False
        assert m.write(b"x" * 20) is True
        assert m.position().bpew
        with pytest.raises(VolumeOverflow):
            m.write(b"x" * margin)
        # Every acknowledged record is still readable.
        m.locate(0, 0)
        assert len(m.read() or b"") == cap - margin - 10
        assert m.read() == b"x" * 20

    def test_set_capacity_shrinks_and_erases(self) -> None:
        m = self.written([b"abc"])
        m.set_capacity(0x7FFF)
        assert m.capacity_bytes < 100 * MB
        assert m.position().eod and m.position().bop

    # -- partitions ----------------------------------------------------------------

    def test_two_partitions(self) -> None:
        m = self.make(100 * MB)
        m.write(b"gone")
        m.format([10 * MB, 0])
        assert list(m.partition_capacities()) == [10 * MB, 90 * MB]
        assert m.position().eod  # erased
        m.write(b"index")
        m.locate(1, 0)
        m.write(b"data1")
        m.write(b"data2")
        assert m.position().partition == 1
        m.locate(0, 0)
        assert m.read() == b"index"
        m.locate(1, 1)
        assert m.read() == b"data2"
        m.format(None)
        assert len(m.partition_capacities()) == 1
        with pytest.raises(InvalidPartition):
            m.format([60 * MB, 60 * MB])
        with pytest.raises(InvalidPartition):
            m.format([1, 1, 1])

    # -- WORM and erase ------------------------------------------------------------

    def test_worm_appends_only(self) -> None:
        m = self.make(worm=True)
        m.write(b"a")
        m.write_filemarks(1)
        m.write(b"b")
        m.locate(0, 1)
        with pytest.raises(WormViolation):
            m.write(b"over")
        with pytest.raises(WormViolation):
            m.erase()
        with pytest.raises(WormViolation):
            m.format(None)
        m.space_eod()
        m.write(b"c")  # appending at EOD is allowed
        m.locate(0, 0)
        assert [m.read(), m.read(), m.read(), m.read()] == [b"a", None, b"b", b"c"]

    def test_erase_from_position(self) -> None:
        m = self.written([b"a", b"b", b"c"])
        m.locate(0, 1)
        m.erase()
        m.locate(0, 0)
        assert m.read() == b"a"
        assert m.position().eod

    # -- MAM -----------------------------------------------------------------------

    def test_host_attributes_and_load_count(self) -> None:
        m = self.make()
        m.set_host_attribute(0x0806, b"BARCODE1")
        m.set_host_attribute(0x0800, b"THUR")
        assert m.host_attributes() == {0x0806: b"BARCODE1", 0x0800: b"THUR"}
        m.set_host_attribute(0x0800, b"")
        assert m.host_attributes() == {0x0806: b"BARCODE1"}
        with pytest.raises(ValueError):
            m.set_host_attribute(0x0001, b"no")
        before = m.load_count
        m.unloaded()
        assert m.load_count == before + 1

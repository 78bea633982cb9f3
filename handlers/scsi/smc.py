"""`MediumChanger`: an SMC-3 medium changer (peripheral type 08h) over a `ChangerModel`.

The changer LU only speaks SCSI; what is where lives in the model (the daemon uses
thur.library.LibraryChanger, persistent; `InMemoryChanger` in handlers/scsi/smc_memory.py
serves engine tests). Model errors are typed and mapped to sense in one place
(`_model_call`).

READ ELEMENT STATUS follows what mtx and the Linux ch driver parse: an 8-byte header whose
NUMBER OF ELEMENTS and BYTE COUNT OF REPORT AVAILABLE describe the whole report (never the
truncated one, so mtx can retry with a larger allocation length), then one element status
page per run of same-type elements in address order. Descriptors are 12 bytes, + 36 with
VOLTAG (primary tag only: AVOLTAG is 0), + 4 + identifier for drives with DVCID.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, TypeVar

from handlers.scsi.logpages import LogPage, tapealert_page
from handlers.scsi.modepages import ModePage, page
from handlers.scsi.opcodes import Op
from handlers.scsi.sense import ScsiError, Sense, SenseCode
from handlers.scsi.spc import DataOut, DeviceIdentity, ScsiDevice, allocation, command, usage

CHANGER_VENDOR = "THUR"
CHANGER_PRODUCT = "VTL"
CHANGER_REVISION = "0100"

T = TypeVar("T")


class ElementType(IntEnum):
    ALL = 0
    MEDIUM_TRANSPORT = 1
    STORAGE = 2
    IMPORT_EXPORT = 3
    DATA_TRANSFER = 4


@dataclass(frozen=True, slots=True)
class ElementRange:
    type: ElementType
    first: int
    count: int

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def __contains__(self, address: object) -> bool:
        return isinstance(address, int) and self.first <= address < self.first + self.count

    def addresses(self) -> range:
        return range(self.first, self.first + self.count)


@dataclass(frozen=True, slots=True)
class ElementLayout:
    """The four element address ranges (mode page 1Dh); 16-bit and non-overlapping."""

    transport: ElementRange
    storage: ElementRange
    import_export: ElementRange
    data_transfer: ElementRange

    def __post_init__(self) -> None:
        spans = sorted((r for r in self.ranges() if r.count), key=lambda r: r.first)
        for r in spans:
            if r.first < 0 or r.last > 0xFFFF:
                raise ValueError(f"{r.type.name} range {r.first:#x}+{r.count} exceeds 16 bits")
        for a, b in zip(spans, spans[1:], strict=False):
            if b.first <= a.last:
                raise ValueError(f"{a.type.name} and {b.type.name} element ranges overlap")

    def ranges(self) -> tuple[ElementRange, ...]:
        return (self.transport, self.storage, self.import_export, self.data_transfer)

    def type_of(self, address: int) -> ElementType | None:
        for r in self.ranges():
            if address in r:
                return r.type
        return None

    def elements(self) -> Iterator[tuple[int, ElementType]]:
        """Every element address in ascending order, with its type."""
        every = [(a, r.type) for r in self.ranges() for a in r.addresses()]
        return iter(sorted(every))

    @classmethod
    def standard(cls, *, drives: int, slots: int, mail_slots: int = 0) -> ElementLayout:
        """Transport 0, drives from 100h, mail slots from 200h, slots from 400h.

        Fixed bases keep addresses stable when the library grows (backup software stores
        them). Counts that do not fit their window fall back to packing each range right
        after the previous one.
        """
        if drives <= 0xFF and mail_slots <= 0x200 and slots <= 0x10000 - 0x400:
            dt, ie, st = 0x100, 0x200, 0x400
        else:
            dt = 1
            ie = dt + drives
            st = ie + mail_slots
        return cls(
            ElementRange(ElementType.MEDIUM_TRANSPORT, 0, 1),
            ElementRange(ElementType.STORAGE, st, slots),
            ElementRange(ElementType.IMPORT_EXPORT, ie, mail_slots),
            ElementRange(ElementType.DATA_TRANSFER, dt, drives),
        )


@dataclass(frozen=True, slots=True)
class ElementStatus:
    """One element as READ ELEMENT STATUS reports it."""

    address: int
    type: ElementType
    full: bool = False
    barcode: str | None = None  # primary volume tag
    source: int | None = None  # element the medium was last moved from (SVALID)
    accessible: bool = True
    exception: tuple[int, int] | None = None  # ASC/ASCQ of an abnormal element state
    imported: bool = False  # IMPEXP: placed in a mail slot by an operator
    disabled: bool = False
    drive: DeviceIdentity | None = None  # data transfer elements: the drive's identity


class ChangerError(Exception):
    """Model errors; `sense` is what the changer LU reports."""

    sense: SenseCode = Sense.HARDWARE_ERROR


class SourceEmpty(ChangerError):
    sense = Sense.SOURCE_EMPTY


class DestinationFull(ChangerError):
    sense = Sense.DESTINATION_FULL


class InvalidElement(ChangerError):
    sense = Sense.INVALID_ELEMENT


class RemovalPrevented(ChangerError):
    sense = Sense.REMOVAL_PREVENTED


class InvalidRequest(ChangerError):
    """A request no element state could satisfy (an EXCHANGE whose first destination
    is also its source or its second destination)."""

    sense = Sense.INVALID_FIELD_IN_CDB


class ChangerModel(Protocol):
    """The library as the changer LU sees it (implemented by thur/library).

    Moving a cartridge into a data transfer element loads it into that drive's LU (the
    drive then reports 06/28/00). Moving one out of a drive unloads it automatically
    (auto-unload, what most libraries do for `mtx unload`); a drive held by PREVENT MEDIUM
    REMOVAL refuses with RemovalPrevented. While the changer itself is prevented, moves
    into import/export elements (exports) raise RemovalPrevented.
    """

    @property
    def layout(self) -> ElementLayout: ...
    def status(self, address: int) -> ElementStatus:
        """Raises InvalidElement for an address outside every range."""
        ...

    def move(self, source: int, destination: int) -> None: ...
    def exchange(self, source: int, first: int, second: int) -> None: ...
    def initialize(self, addresses: range | None = None) -> None:
        """INITIALIZE ELEMENT STATUS (all elements, or a range): re-inventory."""
        ...

    def set_prevent_removal(self, prevent: bool) -> None: ...


ELEMENT_HEADER = struct.Struct(">HHx3s")
"""Element status data header: first address reported, number of elements, rsvd,
byte count of report available (excluding this header)."""

PAGE_HEADER = struct.Struct(">BBHx3s")
"""Element status page header: type code, PVOLTAG/AVOLTAG, descriptor length, rsvd,
byte count of descriptor data available."""

DESCRIPTOR = struct.Struct(">HBxBB3sBH")
"""Element descriptor, first 12 bytes: address, flags, rsvd, ASC, ASCQ, bytes 6-8 (drive:
NOT BUS/ID VALID/LU VALID/LUN, bus address, rsvd), SVALID/INVERT/ED/medium type, source."""

VOLUME_TAG = struct.Struct(">32sxxH")
"""Primary volume tag: 32-byte identifier (space padded), reserved, sequence number."""

DEVICE_ID_HEADER = struct.Struct(">BBxB")
"""Device identifier (DVCID): code set, identifier type, reserved, identifier length."""

VOLTAG_BIT = 0x10


def _volume_tag(barcode: str | None) -> bytes:
    if not barcode:
        return bytes(VOLUME_TAG.size)
    return VOLUME_TAG.pack(barcode.encode("ascii", "replace")[:32].ljust(32, b" "), 0)


BARCODE_ATTRIBUTE = 0x0806


class MediumChanger(ScsiDevice):
    """The library's medium changer logical unit."""

    PERIPHERAL_TYPE = 0x08
    REMOVABLE = False

    def __init__(
        self,
        identity: DeviceIdentity,
        model: ChangerModel,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(identity, logger=logger)
        self.model = model
        self.modes.add(ModePage(0x1D, page(0x1D, 20), provider=self._element_assignment))
        self.modes.add(ModePage(0x1E, page(0x1E, 4)))  # one transport, ROTATE 0
        # 1Fh device capabilities: drives, mail slots and slots store media (0Eh); moves
        # and exchanges between any two of them; the transport holds nothing.
        caps = {2: 0x0E, 5: 0x0E, 6: 0x0E, 7: 0x0E, 13: 0x0E, 14: 0x0E, 15: 0x0E}
        self.modes.add(ModePage(0x1F, page(0x1F, 20, caps)))
        self.tapealerts: set[int] = set()
        self.logs.add(LogPage(0x2E, tapealert_page(lambda: self.tapealerts),
                              after_read=self.tapealerts.clear))

    def _element_assignment(self) -> bytes:
        lay = self.model.layout
        body = struct.pack(
            ">HHHHHHHHxx",
            lay.transport.first, lay.transport.count, lay.storage.first, lay.storage.count,
            lay.import_export.first, lay.import_export.count,
            lay.data_transfer.first, lay.data_transfer.count,
        )
        return bytes(2) + body

    def _model_call(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except ChangerError as err:
            raise ScsiError(err.sense) from err

    def _check_element(self, address: int) -> ElementType:
        found = self.model.layout.type_of(address)
        if found is None:
            raise ScsiError(Sense.INVALID_ELEMENT)
        return found

    def _check_transport(self, cdb: bytes) -> None:
        transport = struct.unpack_from(">H", cdb, 2)[0]
        # 0 means "the default transport" (the Linux ch driver sends it that way).
        if transport and self.model.layout.type_of(transport) != ElementType.MEDIUM_TRANSPORT:
            raise ScsiError(Sense.INVALID_ELEMENT)

    def set_prevent_removal(self, prevent: bool) -> None:
        super().set_prevent_removal(prevent)
        self._model_call(lambda: self.model.set_prevent_removal(prevent))

    # ---- commands ------------------------------------------------------------------

    @command(Op.INITIALIZE_ELEMENT_STATUS, usage(0x07, 0, 0, 0, 0))
    def initialize_element_status(self, cdb: bytes, data_out: DataOut) -> None:
        self._model_call(lambda: self.model.initialize(None))

    @command(Op.INITIALIZE_ELEMENT_STATUS_WITH_RANGE,
             usage(0x37, 0x03, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 0))
    def initialize_element_status_with_range(self, cdb: bytes, data_out: DataOut) -> None:
        if not cdb[1] & 0x01:  # RANGE 0: every element
            self._model_call(lambda: self.model.initialize(None))
            return
        start, count = struct.unpack_from(">H", cdb, 2)[0], struct.unpack_from(">H", cdb, 6)[0]
        self._check_element(start)
        self._model_call(lambda: self.model.initialize(range(start, start + count)))

    @command(Op.POSITION_TO_ELEMENT, usage(0x2B, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0))
    def position_to_element(self, cdb: bytes, data_out: DataOut) -> None:
        if cdb[8] & 0x01:
            raise ScsiError.cdb(8, 0)  # INVERT: our transport cannot rotate media
        self._check_transport(cdb)
        self._check_element(struct.unpack_from(">H", cdb, 4)[0])

    @command(Op.READ_ATTRIBUTE,
             usage(0x8C, 0x1F, 0xFF, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                   0x01))
    def read_attribute(self, cdb: bytes, data_out: DataOut) -> bytes:
        """Medium attributes as the library knows them, for the cartridge in the element
        at bytes 2-3 (SMC-3): the barcode (0806h). The full MAM is read through a drive.
        An empty element has no attributes."""
        sa = cdb[1] & 0x1F
        if sa not in (0x00, 0x01, 0x05):  # values, attribute list, supported attributes
            raise ScsiError.cdb(1, 4)
        address = struct.unpack_from(">H", cdb, 2)[0]
        first = struct.unpack_from(">H", cdb, 8)[0]
        alloc = struct.unpack_from(">I", cdb, 10)[0]
        self._check_element(address)
        status = self._model_call(lambda: self.model.status(address))
        attrs: dict[int, bytes] = {}
        if status.full and status.barcode:
            # 0806h BARCODE: ASCII, 32 bytes, left-aligned, space-padded (SPC-4).
            attrs[BARCODE_ATTRIBUTE] = status.barcode.encode("ascii")[:32].ljust(32)
        if sa == 0x05:
            body = b"".join(struct.pack(">H", i) for i in (BARCODE_ATTRIBUTE,) if i >= first)
        elif sa == 0x01:
            body = b"".join(struct.pack(">H", i) for i in sorted(attrs) if i >= first)
        else:
            body = b"".join(
                struct.pack(">HBH", i, 0x80 | 0x01, len(v)) + v  # read-only, ASCII
                for i, v in sorted(attrs.items())
                if i >= first
            )
        return allocation(struct.pack(">I", len(body)) + body, alloc)

    @command(Op.MOVE_MEDIUM, usage(0xA5, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0))
    def move_medium(self, cdb: bytes, data_out: DataOut) -> None:
        if cdb[10] & 0x01:
            raise ScsiError.cdb(10, 0)  # INVERT
        self._check_transport(cdb)
        source, destination = struct.unpack_from(">HH", cdb, 4)
        self._model_call(lambda: self.model.move(source, destination))

    @command(Op.EXCHANGE_MEDIUM,
             usage(0xA6, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0))
    def exchange_medium(self, cdb: bytes, data_out: DataOut) -> None:
        if cdb[10] & 0x03:
            raise ScsiError.cdb(10, 1)  # INV1 / INV2
        self._check_transport(cdb)
        source, first, second = struct.unpack_from(">HHH", cdb, 4)
        self._model_call(lambda: self.model.exchange(source, first, second))

    @command(Op.READ_ELEMENT_STATUS,
             usage(0xB8, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0x03, 0xFF, 0xFF, 0xFF, 0))
    def read_element_status(self, cdb: bytes, data_out: DataOut) -> bytes:
        voltag, etype = bool(cdb[1] & VOLTAG_BIT), cdb[1] & 0x0F
        start, count = struct.unpack_from(">HH", cdb, 2)
        dvcid = bool(cdb[6] & 0x01)  # CURDATA (bit 1) needs nothing: status is always current
        alloc = int.from_bytes(cdb[7:10], "big")
        if etype > ElementType.DATA_TRANSFER:
            raise ScsiError.cdb(1, 3)
        every = list(self.model.layout.elements())
        if not every or start > every[-1][0]:
            raise ScsiError(Sense.INVALID_ELEMENT)
        chosen = [a for a, t in every if a >= start and etype in (0, t)][:count]
        statuses = [self._model_call(lambda a=a: self.model.status(a)) for a in chosen]
        pages = bytearray()
        for run in _runs(statuses):
            pages += self._element_page(run, voltag, dvcid)
        first = statuses[0].address if statuses else 0
        header = ELEMENT_HEADER.pack(first, len(statuses), len(pages).to_bytes(3, "big"))
        return allocation(header + pages, alloc)

    def _element_page(self, run: list[ElementStatus], voltag: bool, dvcid: bool) -> bytes:
        etype = run[0].type
        ids: list[bytes] = []
        if dvcid and etype == ElementType.DATA_TRANSFER:
            ids = [e.drive.t10_vendor_id() if e.drive else b"" for e in run]
        id_width = max((len(i) for i in ids), default=0)
        length = DESCRIPTOR.size + (VOLUME_TAG.size if voltag else 0)
        length += DEVICE_ID_HEADER.size + id_width if ids else 0
        body = bytearray()
        for index, e in enumerate(run):
            desc = self._descriptor(e)
            if voltag:
                desc += _volume_tag(e.barcode if e.full else None)
            if ids:
                ident = ids[index]
                # code set 2 (ASCII), type 1 (T10 vendor id: vendor + product + serial),
                # the same designator the drive's own VPD 83h carries.
                desc += DEVICE_ID_HEADER.pack(0x02, 0x01 if ident else 0x00, len(ident))
                desc += ident.ljust(id_width, b"\x00")
            body += desc
        head = PAGE_HEADER.pack(etype, 0x80 if voltag else 0, length,
                                len(body).to_bytes(3, "big"))
        return head + bytes(body)

    @staticmethod
    def _descriptor(e: ElementStatus) -> bytes:
        flags = 0x01 if e.full else 0
        if e.exception:
            flags |= 0x04
        if e.type != ElementType.MEDIUM_TRANSPORT and e.accessible:
            flags |= 0x08
        if e.type == ElementType.IMPORT_EXPORT:
            flags |= 0x30 | (0x02 if e.imported else 0)  # INENAB | EXENAB | IMPEXP
        asc, ascq = e.exception or (0, 0)
        byte9 = (0x80 if e.full and e.source is not None else 0) | (0x08 if e.disabled else 0)
        byte9 |= 0x01 if e.full else 0  # medium type 1: data medium
        source = e.source if e.full and e.source is not None else 0
        return DESCRIPTOR.pack(e.address, flags, asc, ascq, bytes(3), byte9, source)


def _runs(statuses: list[ElementStatus]) -> Iterator[list[ElementStatus]]:
    """Split elements (in address order) into runs of one type: one page per run."""
    run: list[ElementStatus] = []
    for e in statuses:
        if run and e.type != run[-1].type:
            yield run
            run = []
        run.append(e)
    if run:
        yield run


def changer_identity(serial: str, *, revision: str = CHANGER_REVISION) -> DeviceIdentity:
    return DeviceIdentity(CHANGER_VENDOR, CHANGER_PRODUCT, revision, serial)

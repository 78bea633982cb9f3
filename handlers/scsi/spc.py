"""`ScsiDevice`: the shared SPC-4 logical unit that the tape drive and changer build on.

Commands are small methods registered with `@command(...)`; the class collects them into
an opcode table at class creation. `execute()` is the single place where CDB length,
the control byte, unit attentions and medium presence are checked and where `ScsiError`
(or any bug) becomes CHECK CONDITION. REPORT SUPPORTED OPERATION CODES is generated from
the same table, so it cannot advertise a command that is not dispatched.

Unit attentions are kept per logical unit, not per I_T nexus: the TCMU ring carries no
initiator identity (DESIGN.md), so the first initiator to send a command consumes them.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from handlers.scsi.engine import CHECK_CONDITION, GOOD, Response
from handlers.scsi.logpages import LogPages
from handlers.scsi.modepages import ModePage, ModePages, page
from handlers.scsi.opcodes import MaintenanceIn, Op
from handlers.scsi.sense import ScsiError, Sense, SenseCode, SenseData

DataOut = memoryview | None
Handler = Callable[["ScsiDevice", bytes, DataOut], "bytes | bytearray | Response | None"]

# Linux-IO's IEEE OUI, the one LIO and tcmu-runner put in their own NAA designators;
# initiators only need it to be a registered company id, and the rest is our hash.
LINUX_IO_OUI = 0x001405

SAM5_VERSION_DESCRIPTOR = 0x00A0
SPC4_VERSION_DESCRIPTOR = 0x0460

STANDARD_INQUIRY = struct.Struct(">BBBBBBBB8s16s4s20sBx8H22x")
"""Standard INQUIRY data, 96 bytes (SPC-4 6.6.2): type, RMB, version, response format,
additional length, flags x3, vendor, product, revision, vendor-specific(20), byte 56,
reserved, 8 version descriptors, 22 reserved."""

VPD_HEADER = struct.Struct(">BBH")
"""VPD page header: peripheral type, page code, page length."""

DESIGNATOR_HEADER = struct.Struct(">BBxB")
"""Designation descriptor header: code set, PIV/association/type, rsvd, length."""

RSOC_ALL_DESCRIPTOR = struct.Struct(">BxHxBH")
"""RSOC all-commands descriptor: opcode, SA, CTDP/SERVACTV, CDB length (8 bytes)."""

RSOC_ONE_HEADER = struct.Struct(">xBH")
"""RSOC one-command header: CTDP/SUPPORT, CDB size (4 bytes), then the usage data."""

TIMEOUTS_DESCRIPTOR = struct.Struct(">HxBII")
"""Command timeouts descriptor: length 0Ah, rsvd, command specific, nominal, recommended."""


def ascii_field(text: str, width: int) -> bytes:
    """Left-aligned, space-padded ASCII as SCSI identification fields require."""
    raw = text.encode("ascii")
    if len(raw) > width:
        raise ValueError(f"{text!r} is longer than {width} bytes")
    return raw.ljust(width, b" ")


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What INQUIRY says about a logical unit. `serial` is unique per LU and stable."""

    vendor: str
    product: str
    revision: str
    serial: str
    naa_oui: int = LINUX_IO_OUI

    def __post_init__(self) -> None:
        ascii_field(self.vendor, 8)
        ascii_field(self.product, 16)
        ascii_field(self.revision, 4)
        if not self.serial or not all(0x20 < ord(c) < 0x7F for c in self.serial):
            raise ValueError(f"serial {self.serial!r} must be non-empty printable ASCII")
        if len(self.serial) > 64:
            raise ValueError("serial longer than 64 characters")

    def naa(self) -> bytes:
        """NAA-6 (IEEE registered extended) designator: OUI + 100 bits hashed from serial."""
        digest = int.from_bytes(hashlib.sha256(b"thur:" + self.serial.encode()).digest()[:13])
        value = (0x6 << 124) | ((self.naa_oui & 0xFFFFFF) << 100) | (digest >> 4)
        return value.to_bytes(16, "big")

    def t10_vendor_id(self) -> bytes:
        """T10 vendor id designator content: vendor(8) + product(16) + serial."""
        return ascii_field(self.vendor, 8) + ascii_field(self.product, 16) + self.serial.encode()


@dataclass(frozen=True, slots=True)
class Command:
    """One row of the opcode table."""

    opcode: int
    service_action: int | None
    name: str
    handler: Handler
    usage: bytes  # CDB usage data: opcode then the mask of bits we interpret
    data_out: bool = False
    ua_exempt: bool = False
    needs_medium: bool = False
    listed: bool = True  # placeholder commands answer but are not advertised by RSOC

    @property
    def cdb_length(self) -> int:
        return len(self.usage)


def command(
    opcode: int,
    usage: bytes,
    *,
    service_action: int | None = None,
    data_out: bool = False,
    ua_exempt: bool = False,
    needs_medium: bool = False,
    listed: bool = True,
) -> Callable[[Handler], Handler]:
    """Register a method as the handler of `opcode` (and `service_action`)."""

    def mark(fn: Handler) -> Handler:
        specs = getattr(fn, "_scsi_commands", [])
        specs.append(
            dict(opcode=opcode, usage=usage, service_action=service_action, data_out=data_out,
                 ua_exempt=ua_exempt, needs_medium=needs_medium, listed=listed)
        )
        fn._scsi_commands = specs  # type: ignore[attr-defined]
        return fn

    return mark


def usage(*masks: int) -> bytes:
    """CDB usage mask; the control byte (last) is 00h: NACA and LINK are not supported."""
    return bytes(masks) + b"\x00"


def allocation(data: bytes | bytearray, length: int) -> bytes:
    """Honour an allocation length: truncate, never pad; 0 means no data."""
    return bytes(data[:length])


class ScsiDevice:
    """Base logical unit. Subclasses set the class attributes and register commands."""

    PERIPHERAL_TYPE: ClassVar[int] = 0x1F
    REMOVABLE: ClassVar[bool] = False
    COMMANDS: ClassVar[dict[tuple[int, int | None], Command]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.COMMANDS = _collect_commands(cls)

    def __init__(self, identity: DeviceIdentity, *, logger: logging.Logger | None = None):
        self.identity = identity
        self.log = logger or logging.getLogger(f"{__name__}.{type(self).__name__}")
        # Commands on one LU are serialised by the ring, but other LUs' threads (the
        # changer loading this drive) mutate state too: every entry point takes this lock.
        self.lock = threading.RLock()
        self._unit_attentions: deque[SenseCode] = deque([Sense.POWER_ON_RESET])
        self.prevent_removal = False
        self.modes = ModePages()
        self.logs = LogPages()
        self.vpd_pages: dict[int, Callable[[], bytes]] = {
            0x80: lambda: self.identity.serial.encode(),
            0x83: self._vpd_device_identification,
        }
        self._control = self.modes.add(
            ModePage(
                0x0A,
                page(0x0A, 12),  # QAM 0: commands are executed in order (tape needs it)
                changeable=page(0x0A, 12, {2: 0x04}),  # only D_SENSE may change
            )
        )
        self.modes.add(
            ModePage(
                0x1C,
                page(0x1C, 12, {2: 0x08}),  # DEXCPT: informational exceptions disabled
                changeable=page(0x1C, 12, {2: 0x08, 3: 0x0F, 4: 0xFF, 5: 0xFF, 6: 0xFF,
                                           7: 0xFF, 8: 0xFF, 9: 0xFF, 10: 0xFF, 11: 0xFF}),
            )
        )

    # ---- the engine contract ---------------------------------------------------------

    def wants_data_out(self, cdb: bytes) -> bool:
        cmd = self._lookup(bytes(cdb[:2])) if cdb else None
        return bool(cmd and cmd.data_out)

    def execute(self, cdb: bytes, data_out: memoryview | None) -> Response:
        try:
            with self.lock:
                return self._dispatch(bytes(cdb), data_out)
        except ScsiError as err:
            return self._check_condition(err.sense_data, err.data)
        except Exception:  # a bug must become sense, never an exception in the ring
            self.log.exception("command %s failed", bytes(cdb[:16]).hex())
            return self._check_condition(SenseData(Sense.HARDWARE_ERROR))

    # ---- dispatch --------------------------------------------------------------------

    def _lookup(self, cdb: bytes) -> Command | None:
        opcode = cdb[0]
        cmd = self.COMMANDS.get((opcode, None))
        if cmd is None and len(cdb) > 1:
            cmd = self.COMMANDS.get((opcode, cdb[1] & 0x1F))
        return cmd

    def _has_service_actions(self, opcode: int) -> bool:
        return any(op == opcode and sa is not None for op, sa in self.COMMANDS)

    def _dispatch(self, cdb: bytes, data_out: DataOut) -> Response:
        if not cdb:
            raise ScsiError(Sense.INVALID_OPCODE)
        cmd = self._lookup(cdb)
        # REPORT LUNS stays with LIO core; should one ever reach us it must not eat a UA.
        exempt = cmd.ua_exempt if cmd else cdb[0] == Op.REPORT_LUNS
        if not exempt:
            self._report_unit_attention()
        if cmd is None:
            if len(cdb) > 1 and self._has_service_actions(cdb[0]):
                raise ScsiError.cdb(1, 4)  # known opcode, unknown service action
            raise ScsiError(Sense.INVALID_OPCODE)
        if len(cdb) < cmd.cdb_length:
            raise ScsiError(Sense.INVALID_FIELD_IN_CDB)  # truncated CDB
        cdb = cdb[: cmd.cdb_length]
        if cdb[-1] & 0x04:  # NACA is not supported
            raise ScsiError.cdb(cmd.cdb_length - 1, 2)
        if cmd.needs_medium:
            self.check_ready()
        result = cmd.handler(self, cdb, data_out)
        if isinstance(result, Response):
            return result
        return Response(GOOD, b"", bytes(result) if result else b"")

    def _report_unit_attention(self) -> None:
        if self._unit_attentions:
            raise ScsiError(self._unit_attentions.popleft())

    def _check_condition(self, sense: SenseData, data: bytes = b"") -> Response:
        try:
            raw = sense.encode(descriptor=self.descriptor_sense)
        except Exception:  # never let an encoding bug escape execute()
            self.log.exception("encoding sense %r failed", sense)
            raw = SenseData(Sense.HARDWARE_ERROR).fixed()
        return Response(CHECK_CONDITION, raw, data)

    # ---- hooks for subclasses ----------------------------------------------------------

    @property
    def descriptor_sense(self) -> bool:
        return bool(self._control.current[2] & 0x04)  # D_SENSE

    def check_ready(self) -> None:
        """Raise the NOT READY condition when the LU cannot access its medium."""

    def add_unit_attention(self, sense: SenseCode) -> None:
        with self.lock:
            if sense not in self._unit_attentions:
                self._unit_attentions.append(sense)

    def pending_unit_attentions(self) -> list[SenseCode]:
        with self.lock:
            return list(self._unit_attentions)

    def data_out(self, data_out: DataOut, length: int) -> bytes:
        """The first `length` bytes of data-out; a shorter transfer is a length error."""
        data = bytes(data_out[:length]) if data_out is not None and length else b""
        if len(data) < length:
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        return data

    def inquiry_flags(self) -> tuple[int, int, int]:
        """Bytes 5, 6, 7 of standard INQUIRY data."""
        return 0x00, 0x00, 0x02  # CMDQUE: the ring queues commands for us

    def version_descriptors(self) -> tuple[int, ...]:
        return (SAM5_VERSION_DESCRIPTOR, SPC4_VERSION_DESCRIPTOR)

    # ---- SPC commands ------------------------------------------------------------------

    @command(Op.TEST_UNIT_READY, usage(0x00, 0, 0, 0, 0))
    def test_unit_ready(self, cdb: bytes, data_out: DataOut) -> None:
        self.check_ready()

    @command(Op.INQUIRY, usage(0x12, 0x01, 0xFF, 0xFF, 0xFF), ua_exempt=True)
    def inquiry(self, cdb: bytes, data_out: DataOut) -> bytes:
        evpd, page_code = cdb[1] & 0x01, cdb[2]
        alloc = struct.unpack_from(">H", cdb, 3)[0]
        if cdb[1] & 0x02:  # CMDDT is obsolete
            raise ScsiError.cdb(1, 1)
        if not evpd:
            if page_code:
                raise ScsiError.cdb(2, 7)
            return allocation(self.standard_inquiry(), alloc)
        return allocation(self.vpd_page(page_code), alloc)

    def standard_inquiry(self) -> bytes:
        ident = self.identity
        b5, b6, b7 = self.inquiry_flags()
        versions = list(self.version_descriptors())[:8]
        versions += [0] * (8 - len(versions))
        return STANDARD_INQUIRY.pack(
            self.PERIPHERAL_TYPE & 0x1F, 0x80 if self.REMOVABLE else 0, 0x06, 0x02,
            STANDARD_INQUIRY.size - 5, b5, b6, b7,
            ascii_field(ident.vendor, 8), ascii_field(ident.product, 16),
            ascii_field(ident.revision, 4), bytes(20), 0, *versions,
        )

    def vpd_page(self, page_code: int) -> bytes:
        if page_code == 0x00:
            body = bytes(sorted({0x00, *self.vpd_pages}))
        elif page_code in self.vpd_pages:
            body = self.vpd_pages[page_code]()
        else:
            raise ScsiError.cdb(2, 7)
        return VPD_HEADER.pack(self.PERIPHERAL_TYPE & 0x1F, page_code, len(body)) + body

    def _vpd_device_identification(self) -> bytes:
        naa = self.identity.naa()
        t10 = self.identity.t10_vendor_id()
        # code set 1 binary / 2 ASCII; association 0 = the logical unit; type 3 NAA, 1 T10.
        return (
            DESIGNATOR_HEADER.pack(0x01, 0x03, len(naa)) + naa
            + DESIGNATOR_HEADER.pack(0x02, 0x01, len(t10)) + t10
        )

    @command(Op.REQUEST_SENSE, usage(0x03, 0x01, 0, 0, 0xFF), ua_exempt=True)
    def request_sense(self, cdb: bytes, data_out: DataOut) -> bytes:
        # A pending unit attention is returned as data and cleared (SAM-5 5.14): that is
        # how REQUEST SENSE "reports" it, instead of failing with CHECK CONDITION.
        sense = SenseData(self._unit_attentions.popleft()) if self._unit_attentions else (
            SenseData(Sense.NO_SENSE)
        )
        return allocation(sense.encode(descriptor=bool(cdb[1] & 0x01)), cdb[4])

    @command(Op.MODE_SENSE_6, usage(0x1A, 0x08, 0xFF, 0xFF, 0xFF))
    def mode_sense_6(self, cdb: bytes, data_out: DataOut) -> bytes:
        return allocation(self.modes.sense(cdb, ten=False), cdb[4])

    @command(Op.MODE_SENSE_10, usage(0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF))
    def mode_sense_10(self, cdb: bytes, data_out: DataOut) -> bytes:
        return allocation(self.modes.sense(cdb, ten=True), struct.unpack_from(">H", cdb, 7)[0])

    @command(Op.MODE_SELECT_6, usage(0x15, 0x11, 0, 0, 0xFF), data_out=True)
    def mode_select_6(self, cdb: bytes, data_out: DataOut) -> None:
        self.modes.select(cdb, self.data_out(data_out, cdb[4]), ten=False)

    @command(Op.MODE_SELECT_10, usage(0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF), data_out=True)
    def mode_select_10(self, cdb: bytes, data_out: DataOut) -> None:
        length = struct.unpack_from(">H", cdb, 7)[0]
        self.modes.select(cdb, self.data_out(data_out, length), ten=True)

    @command(Op.LOG_SENSE, usage(0x4D, 0x01, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0xFF, 0xFF))
    def log_sense(self, cdb: bytes, data_out: DataOut) -> bytes:
        return allocation(self.logs.sense(cdb), struct.unpack_from(">H", cdb, 7)[0])

    @command(Op.LOG_SELECT, usage(0x4C, 0x03, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF), data_out=True)
    def log_select(self, cdb: bytes, data_out: DataOut) -> None:
        length = struct.unpack_from(">H", cdb, 7)[0]
        self.logs.select(cdb, self.data_out(data_out, length))

    @command(Op.PREVENT_ALLOW_MEDIUM_REMOVAL, usage(0x1E, 0, 0, 0, 0x03))
    def prevent_allow(self, cdb: bytes, data_out: DataOut) -> None:
        if cdb[4] & 0x02:  # 10b and 11b are obsolete / changer-only values
            raise ScsiError.cdb(4, 1)
        self.set_prevent_removal(bool(cdb[4] & 0x01))

    def set_prevent_removal(self, prevent: bool) -> None:
        self.prevent_removal = prevent

    @command(
        Op.MAINTENANCE_IN,
        # Byte 1 of CDB usage data holds the service action itself (SPC-4 6.35.3).
        usage(0xA3, 0x0C, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00),
        service_action=MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES,
    )
    def report_supported_opcodes(self, cdb: bytes, data_out: DataOut) -> bytes:
        rctd, option = bool(cdb[2] & 0x80), cdb[2] & 0x07
        opcode, sa = cdb[3], struct.unpack_from(">H", cdb, 4)[0]
        alloc = struct.unpack_from(">I", cdb, 6)[0]
        listed = sorted(
            (c for c in self.COMMANDS.values() if c.listed),
            key=lambda c: (c.opcode, c.service_action or 0),
        )
        if option == 0:
            body = bytearray()
            for c in listed:
                flags = (0x02 if rctd else 0) | (0x01 if c.service_action is not None else 0)
                body += RSOC_ALL_DESCRIPTOR.pack(
                    c.opcode, c.service_action or 0, flags, c.cdb_length
                )
                if rctd:
                    body += TIMEOUTS_DESCRIPTOR.pack(0x0A, 0, 0, 0)
            return allocation(struct.pack(">I", len(body)) + body, alloc)
        has_sa = self._has_service_actions(opcode)
        if option == 1 and has_sa:
            raise ScsiError.cdb(2, 2)
        if option == 2 and not has_sa:
            raise ScsiError.cdb(2, 2)
        if option > 3:
            raise ScsiError.cdb(2, 2)
        key = (opcode, sa if has_sa else None)
        found = self.COMMANDS.get(key) if option in (1, 2, 3) else None
        if found is None or not found.listed:
            return allocation(RSOC_ONE_HEADER.pack(0x01, 0), alloc)  # SUPPORT 001b
        head = RSOC_ONE_HEADER.pack((0x80 if rctd else 0) | 0x03, found.cdb_length)
        tail = TIMEOUTS_DESCRIPTOR.pack(0x0A, 0, 0, 0) if rctd else b""
        return allocation(head + found.usage + tail, alloc)


def _collect_commands(cls: type) -> dict[tuple[int, int | None], Command]:
    """Build the opcode table from `@command` marks; subclasses override by opcode."""
    table: dict[tuple[int, int | None], Command] = {}
    for klass in reversed(cls.__mro__):
        for name, fn in vars(klass).items():
            for spec in getattr(fn, "_scsi_commands", ()):
                key = (spec["opcode"], spec["service_action"])
                table[key] = Command(name=name, handler=fn, **spec)
    return table


ScsiDevice.COMMANDS = _collect_commands(ScsiDevice)


def command_table(cls: type[ScsiDevice]) -> list[Command]:
    """The listed commands of a device class (for documentation and tests)."""
    return sorted(
        (c for c in cls.COMMANDS.values() if c.listed),
        key=lambda c: (c.opcode, c.service_action or 0),
    )

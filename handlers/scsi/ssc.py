"""`TapeDrive`: an SSC-4 LTO-8 drive (peripheral type 01h) serving a `thur.tape.Medium`.

The drive is assembled from small parts, each a class of `@command` methods over the shared
cartridge state of `ssc_base.TapeDriveBase`:
- `ssc_io.TapeIO`: READ/WRITE, VERIFY, WRITE FILEMARKS, SPACE, LOCATE, READ POSITION, ERASE;
- `ssc_pages.TapePages`: mode pages (block descriptor, 0Fh, 10h, 10h/01h, 11h), log pages
  (0Ch, 17h, 1Bh, 2Eh), FORMAT MEDIUM and SET CAPACITY;
- `ssc_mam.TapeAttributes`: READ/WRITE ATTRIBUTE (MAM);
- `ssc_crypto.TapeCrypto`: tape data encryption (SECURITY PROTOCOL 20h pages, AES-256-GCM
  sealing of records);
- this module: identity, REWIND, LOAD UNLOAD, READ BLOCK LIMITS, REPORT DENSITY SUPPORT and
  SECURITY PROTOCOL IN/OUT.
Storage errors of the cartridge become sense in one place, `TapeDriveBase.tape_sense`.

Identity: vendor THUR, product "Ultrium 8-SCSI". With our own vendor id no vendor-specific
driver will claim the drive anyway; the product string says what the drive is (an LTO-8,
SCSI-attached) the way generic LTO detection looks for it ("Ultrium 8"), rather than
"ULTRIUM-HH8", whose half-height claim is physical and meaningless here. It must never change:
backup software keys drive types on vendor + product.

Positioning conventions: REWIND and LOAD go to the beginning of partition 0 (SSC-4), not of
the current partition. A cartridge whose barcode starts with CLN is a cleaning cartridge: it
loads (and clears the drive's cleaning request), its MAM is readable, and every medium
access answers NOT READY 30/03 (cleaning cartridge installed).
"""

from __future__ import annotations

import logging
import struct

from handlers.scsi.opcodes import Op
from handlers.scsi.sense import ScsiError, Sense
from handlers.scsi.spc import DataOut, DeviceIdentity, allocation, command, usage
from handlers.scsi.ssc_base import (
    LTO8,
    MAX_BLOCK_LENGTH,
    MIN_BLOCK_LENGTH,
    Density,
    DriveOccupied,
    MediumRemovalPrevented,
    TapeAlert,
)
from handlers.scsi.ssc_crypto import PROTOCOL_TDE, TapeCrypto
from handlers.scsi.ssc_io import TapeIO
from handlers.scsi.ssc_mam import TapeAttributes
from handlers.scsi.ssc_pages import TapePages
from thur.tape import Medium, TapeError, TapePosition

TAPE_VENDOR = "THUR"
TAPE_PRODUCT = "Ultrium 8-SCSI"
TAPE_REVISION = "0100"

DENSITY_DESCRIPTOR = struct.Struct(">BBBH3sHHI8s8s20s")
"""REPORT DENSITY SUPPORT density descriptor, 52 bytes (SSC-4 6.20.2): primary and
secondary code, WRTOK/DUP/DEFLT/DLV, descriptor length, bits per mm, media width, tracks,
capacity (MB), assigning organization, density name, description."""

BLOCK_LIMITS = struct.Struct(">B3sH")
"""READ BLOCK LIMITS data: granularity, maximum block length, minimum block length."""

SUPPORTED_PROTOCOLS = struct.Struct(">6xH")
"""SECURITY PROTOCOL IN 00h/0000h header: 6 reserved, list length; protocol bytes follow."""

SECURITY_PROTOCOLS = bytes([0x00, PROTOCOL_TDE])  # information; tape data encryption


class TapeDrive(TapeIO, TapePages, TapeAttributes, TapeCrypto):
    """An LTO-8 tape drive logical unit."""

    TAPEALERT_SUPPORTED = frozenset(TapeAlert)

    def __init__(self, identity: DeviceIdentity, *, logger: logging.Logger | None = None):
        super().__init__(identity, logger=logger)
        self.vpd_pages.update({
            0xB0: lambda: bytes([0x01, 0x00]),  # WORM: the drive supports WORM media
            0xB1: lambda: self.identity.serial.encode(),  # manufacturer-assigned serial
            0xB2: self._vpd_tapealert_supported,
        })
        self.register_pages()

    def _vpd_tapealert_supported(self) -> bytes:
        mask = 0
        for flag in self.TAPEALERT_SUPPORTED:
            mask |= 1 << (64 - int(flag))  # flag 1 is the most significant bit
        return bytes(4) + mask.to_bytes(8, "big")

    # ---- positioning and threading -----------------------------------------------------

    @command(Op.REWIND, usage(0x01, 0x01, 0, 0, 0), needs_medium=True)
    def rewind(self, cdb: bytes, data_out: DataOut) -> None:
        medium = self._loaded()
        with self.medium_errors():
            medium.locate(0, 0)

    @command(Op.LOAD_UNLOAD, usage(0x1B, 0x01, 0, 0, 0x0F))
    def load_unload(self, cdb: bytes, data_out: DataOut) -> None:
        medium = self._medium
        if medium is None:
            raise ScsiError(Sense.MEDIUM_NOT_PRESENT)
        load, eot = bool(cdb[4] & 0x01), bool(cdb[4] & 0x04)  # RETEN and HOLD: no-ops
        if load:
            if eot:  # EOT only qualifies an unload
                raise ScsiError.cdb(4, 2)
            self._thread(medium)
            return
        if self.prevent_removal:
            raise ScsiError(Sense.REMOVAL_PREVENTED)
        if self._threaded:
            with self.medium_errors():
                if not self.cleaning:
                    medium.locate(0, 0)
                medium.unloaded()  # the durability point of everything written
            self._threaded = False  # the cartridge waits in the drive for the changer
            self.on_unload()

    def _thread(self, medium: Medium) -> None:
        self._threaded = True
        if not self.cleaning:
            with self.medium_errors():
                medium.locate(0, 0)
        self.on_load()

    @command(Op.READ_BLOCK_LIMITS, usage(0x05, 0, 0, 0, 0))
    def read_block_limits(self, cdb: bytes, data_out: DataOut) -> bytes:
        if cdb[1] & 0x01:  # MLOC: maximum logical object identifier is not reported
            raise ScsiError.cdb(1, 0)
        return BLOCK_LIMITS.pack(0, MAX_BLOCK_LENGTH.to_bytes(3, "big"), MIN_BLOCK_LENGTH)

    @command(Op.REPORT_DENSITY_SUPPORT, usage(0x44, 0x03, 0, 0, 0, 0, 0, 0xFF, 0xFF))
    def report_density_support(self, cdb: bytes, data_out: DataOut) -> bytes:
        if cdb[1] & 0x02:  # MEDIUM TYPE form is not supported
            raise ScsiError.cdb(1, 1)
        writable = True
        density = LTO8
        if cdb[1] & 0x01:  # MEDIA: what the mounted cartridge holds
            medium = self._loaded()
            density = Density(**{**_density_fields(LTO8), "code": medium.density_code,
                                 "capacity_mb": medium.capacity_bytes // 1_000_000})
            writable = not medium.write_protected
        desc = DENSITY_DESCRIPTOR.pack(
            density.code, density.code, (0x80 if writable else 0) | 0x20 | 0x01,
            DENSITY_DESCRIPTOR.size - 3, density.bits_per_mm.to_bytes(3, "big"),
            density.media_width, density.tracks, density.capacity_mb,
            density.organization.encode().ljust(8), density.name.encode().ljust(8),
            density.description.encode().ljust(20),
        )
        data = struct.pack(">Hxx", len(desc) + 2) + desc
        return allocation(data, struct.unpack_from(">H", cdb, 7)[0])

    # ---- SECURITY PROTOCOL IN / OUT ---------------------------------------------------

    @command(Op.SECURITY_PROTOCOL_IN,
             usage(0xA2, 0xFF, 0xFF, 0xFF, 0x80, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0))
    def security_protocol_in(self, cdb: bytes, data_out: DataOut) -> bytes:
        protocol, specific = cdb[1], struct.unpack_from(">H", cdb, 2)[0]
        alloc = struct.unpack_from(">I", cdb, 6)[0]
        if cdb[4] & 0x80:  # INC_512: lengths in 512-byte units are not supported
            raise ScsiError.cdb(4, 7)
        if protocol not in SECURITY_PROTOCOLS:
            raise ScsiError.cdb(1, 7)
        if protocol == PROTOCOL_TDE:
            body = self.tde_in_page(specific)
        elif specific == 0x0000:  # supported security protocols list
            body = SUPPORTED_PROTOCOLS.pack(len(SECURITY_PROTOCOLS)) + SECURITY_PROTOCOLS
        elif specific == 0x0001:  # certificate data: none
            body = struct.pack(">xxH", 0)
        else:
            raise ScsiError.cdb(2, 7)
        return allocation(body, alloc)

    @command(Op.SECURITY_PROTOCOL_OUT,
             usage(0xB5, 0xFF, 0xFF, 0xFF, 0x80, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0), data_out=True)
    def security_protocol_out(self, cdb: bytes, data_out: DataOut) -> None:
        # Protocol 00h is information only (IN): only 20h takes data from the host.
        if cdb[1] != PROTOCOL_TDE:
            raise ScsiError.cdb(1, 7)
        if cdb[4] & 0x80:  # INC_512
            raise ScsiError.cdb(4, 7)
        self.tde_out(struct.unpack_from(">H", cdb, 2)[0], data_out,
                     struct.unpack_from(">I", cdb, 6)[0])


def _density_fields(d: Density) -> dict[str, object]:
    return {f: getattr(d, f) for f in Density.__dataclass_fields__}


def tape_drive_identity(serial: str, *, revision: str = TAPE_REVISION) -> DeviceIdentity:
    """The identity every Thur drive presents; only the serial differs between drives."""
    return DeviceIdentity(TAPE_VENDOR, TAPE_PRODUCT, revision, serial)


__all__ = [
    "LTO8", "Density", "DriveOccupied", "Medium", "MediumRemovalPrevented", "TapeAlert",
    "TapeDrive", "TapeError", "TapePosition", "tape_drive_identity",
]

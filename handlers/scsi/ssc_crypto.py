"""Tape data encryption (SSC-4 4.2.23, SECURITY PROTOCOL 20h): AES-256-GCM in the drive.

The host sets a key with SECURITY PROTOCOL OUT 20h page 0010h (Set Data Encryption) and
asks with SECURITY PROTOCOL IN 20h:
- 0000h / 0001h: the IN / OUT pages supported;
- 0010h: data encryption capabilities, one algorithm descriptor (index 01h, AES-256-GCM-128,
  security algorithm code 0001_0014h, 32-byte key, no key-associated data, raw decryption
  not supported);
- 0011h: supported key formats (00h, plain text key);
- 0020h: data encryption status (modes, algorithm, key instance counter);
- 0021h: next block encryption status, answered from the cartridge's per-record flag
  (`Medium.next_encrypted()`) without moving.

Records: with encryption mode ENCRYPT every record written is sealed as
nonce(12, random) + ciphertext + tag(16) and written with `encrypted=True`; the host's
block length stays the plaintext length (residues, ILI, statistics), the cartridge counts
the sealed length against capacity. Reading an encrypted record needs decryption mode
DECRYPT or MIXED and the right key; otherwise the READ ends with DATA PROTECT and no data:
74/01 UNABLE TO DECRYPT DATA (decryption disabled or no key), 74/03 INCORRECT DATA
ENCRYPTION KEY (the GCM tag does not verify: the pool's own hashes already rule out a
corrupted record), 74/04 CRYPTOGRAPHIC INTEGRITY VALIDATION FAILED (a sealed record too
short to hold nonce and tag). A plain record read in DECRYPT mode is 74/02 UNENCRYPTED DATA
ENCOUNTERED WHILE DECRYPTING. In all cases the position is past the record (as after any
record read), so the host can space on.

Scope: the drive cannot see I_T nexuses (LIO hands us commands without the initiator), so
the key is per logical unit: SCOPE LOCAL and ALL I_T NEXUS both set it, PUBLIC changes
nothing, LOCK is accepted and means nothing. The key lives only in RAM: a new drive object
(power on) has none, and it is cleared whenever the cartridge leaves the drive (LOAD
UNLOAD unload or the changer's unload), as if CKOD were always set.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from handlers.scsi.sense import ScsiError, Sense, SenseCode, SenseKey
from handlers.scsi.spc import DataOut
from handlers.scsi.ssc_base import TapeDriveBase
from thur.tape import Medium, TapeError

PROTOCOL_TDE = 0x20

ALGORITHM_INDEX = 0x01
ALGORITHM_AES256_GCM = 0x0001_0014  # SSC-4 security algorithm code: AES-256-GCM-128
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES
KEY_FORMAT_PLAIN = 0x00

# Encryption / decryption modes (Set Data Encryption bytes 6 and 7).
ENCRYPT_DISABLE, ENCRYPT_EXTERNAL, ENCRYPT_ENCRYPT = 0x00, 0x01, 0x02
DECRYPT_DISABLE, DECRYPT_RAW, DECRYPT_DECRYPT, DECRYPT_MIXED = 0x00, 0x01, 0x02, 0x03
SCOPE_PUBLIC, SCOPE_LOCAL, SCOPE_ALL = 0x0, 0x1, 0x2

# SPIN 20h pages.
PAGE_IN_SUPPORT = 0x0000
PAGE_OUT_SUPPORT = 0x0001
PAGE_CAPABILITIES = 0x0010
PAGE_KEY_FORMATS = 0x0011
PAGE_STATUS = 0x0020
PAGE_NEXT_BLOCK = 0x0021
IN_PAGES = (PAGE_IN_SUPPORT, PAGE_OUT_SUPPORT, PAGE_CAPABILITIES, PAGE_KEY_FORMATS,
            PAGE_STATUS, PAGE_NEXT_BLOCK)
PAGE_SET_DATA_ENCRYPTION = 0x0010  # the one SPOUT 20h page
OUT_PAGES = (PAGE_SET_DATA_ENCRYPTION,)

PAGE_HEADER = struct.Struct(">HH")
"""Every protocol 20h page: page code, page length (bytes after these four)."""

CAPABILITIES = struct.Struct(">HHB15x")
"""Data Encryption Capabilities header, 20 bytes: page code, length, EXTDECC/CFG_P,
15 reserved; algorithm descriptors follow."""

ALGORITHM_DESCRIPTOR = struct.Struct(">BxHBBHHHBBHH2xI")
"""Algorithm descriptor, 24 bytes: index, reserved, descriptor length (20), AVFMV SDK_C
MAC_C DELB_C DECRYPT_C(2) ENCRYPT_C(2), AVFCLP(2) NONCE_C(2) KADF_C VCELB_C UKADF AKADF,
maximum U-KAD and A-KAD bytes, key bytes, DKAD_C(2) EEMC_C(2) RDMC_C(3) EAREM, maximum
EEDK count, MSDK count, maximum EEDK size, reserved, security algorithm code."""

STATUS = struct.Struct(">HHBBBBIBx2x8x")
"""Data Encryption Status, 24 bytes: page code, length (20), I_T nexus scope(3) / key
scope(3), encryption mode, decryption mode, algorithm index, key instance counter,
parameters control(3) VCELB CEEMS(2) RDMD, reserved, ASDK count, 8 reserved."""

NEXT_BLOCK = struct.Struct(">HHQBBBB")
"""Next Block Encryption Status, 16 bytes: page code, length (12), logical object number,
compression status(4) / encryption status(4), algorithm index, EMES RDMDS, KAD format."""

SET_DATA_ENCRYPTION = struct.Struct(">HHBBBBBBB7xH")
"""Set Data Encryption header, 20 bytes: page code, length, SCOPE(3) LOCK, CEEM(2)
RDMC(2) SDK CKOD CKORP CKORL, encryption mode, decryption mode, algorithm index, key
format, KAD format, 7 reserved, key length; the key (and KAD descriptors) follow."""

# Next block encryption status values (SSC-4 table "ENCRYPTION STATUS field").
NB_NOT_A_BLOCK = 0x2  # a filemark, or end of data
NB_NOT_ENCRYPTED = 0x3
NB_ENCRYPTED_CAN_DECRYPT = 0x5  # encrypted, and a key is loaded for reading
NB_ENCRYPTED_NO_KEY = 0x6  # encrypted, no key (or decryption disabled)

UNABLE_TO_DECRYPT = SenseCode(SenseKey.DATA_PROTECT, 0x74, 0x01)
UNENCRYPTED_WHILE_DECRYPTING = SenseCode(SenseKey.DATA_PROTECT, 0x74, 0x02)
INCORRECT_KEY = SenseCode(SenseKey.DATA_PROTECT, 0x74, 0x03)
INTEGRITY_FAILED = SenseCode(SenseKey.DATA_PROTECT, 0x74, 0x04)


@dataclass(slots=True)
class EncryptionState:
    """The logical unit's data encryption parameters (volatile)."""

    scope: int = SCOPE_PUBLIC
    encryption_mode: int = ENCRYPT_DISABLE
    decryption_mode: int = DECRYPT_DISABLE
    ceem: int = 0
    key: bytes | None = None
    key_instance: int = 0  # bumped whenever the parameters (and so the key) change

    @property
    def algorithm_index(self) -> int:
        active = self.encryption_mode or self.decryption_mode
        return ALGORITHM_INDEX if active else 0

    @property
    def can_decrypt(self) -> bool:
        return self.key is not None and self.decryption_mode in (DECRYPT_DECRYPT,
                                                                  DECRYPT_MIXED)


def seal(key: bytes, record: bytes) -> bytes:
    """nonce + AES-256-GCM(record) + tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, record, None)


def unseal(key: bytes, sealed: bytes) -> bytes:
    """The plaintext of a sealed record; InvalidTag when the key is wrong, ValueError when
    the record cannot be a sealed one."""
    if len(sealed) < SEAL_OVERHEAD:
        raise ValueError(f"a sealed record holds at least {SEAL_OVERHEAD} bytes")
    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], None)


def _page(code: int, body: bytes) -> bytes:
    return PAGE_HEADER.pack(code, len(body)) + body


class TapeCrypto(TapeDriveBase):
    """SECURITY PROTOCOL 20h pages and the record sealing of the drive."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.encryption = EncryptionState()

    # ---- the data path's hooks (ssc_io) -----------------------------------------------

    def seal_record(self, record: bytes) -> tuple[bytes, bool]:
        enc = self.encryption
        if enc.encryption_mode == ENCRYPT_ENCRYPT and enc.key is not None:
            return seal(enc.key, record), True
        return record, False

    def open_record(self, record: bytes, encrypted: bool, *, info: int, data: bytes) -> bytes:
        enc = self.encryption
        if not encrypted:
            if enc.decryption_mode == DECRYPT_DECRYPT:
                raise ScsiError(UNENCRYPTED_WHILE_DECRYPTING, info=info, data=data)
            return record
        if not enc.can_decrypt:
            raise ScsiError(UNABLE_TO_DECRYPT, info=info, data=data)
        assert enc.key is not None
        try:
            return unseal(enc.key, record)
        except InvalidTag:
            raise ScsiError(INCORRECT_KEY, info=info, data=data) from None
        except ValueError:
            raise ScsiError(INTEGRITY_FAILED, info=info, data=data) from None

    def on_unload(self) -> None:
        super().on_unload()
        self.clear_encryption()

    def clear_encryption(self) -> None:
        """Forget the key and return to plain reading and writing."""
        enc = self.encryption
        if enc.key is not None or enc.encryption_mode or enc.decryption_mode:
            self.encryption = EncryptionState(key_instance=enc.key_instance + 1)

    # ---- SECURITY PROTOCOL IN 20h -------------------------------------------------------

    def tde_in_page(self, page: int) -> bytes:
        """A protocol 20h page for SECURITY PROTOCOL IN (unknown page: 24/00 on byte 2)."""
        if page == PAGE_IN_SUPPORT:
            return _page(page, b"".join(struct.pack(">H", p) for p in IN_PAGES))
        if page == PAGE_OUT_SUPPORT:
            return _page(page, b"".join(struct.pack(">H", p) for p in OUT_PAGES))
        if page == PAGE_CAPABILITIES:
            return self._capabilities()
        if page == PAGE_KEY_FORMATS:
            return _page(page, bytes([KEY_FORMAT_PLAIN]))
        if page == PAGE_STATUS:
            return self._status()
        if page == PAGE_NEXT_BLOCK:
            return self._next_block()
        raise ScsiError.cdb(2, 7)

    def _capabilities(self) -> bytes:
        avfmv = 0x80 if self.ready and not self.cleaning else 0  # valid for the volume
        desc = ALGORITHM_DESCRIPTOR.pack(
            ALGORITHM_INDEX, ALGORITHM_DESCRIPTOR.size - 4,
            avfmv | (2 << 2) | 2,  # DECRYPT_C, ENCRYPT_C: capable (software)
            0x01 << 4,  # NONCE_C 1: the device server generates the nonce
            0, 0, KEY_BYTES,  # no U-KAD / A-KAD
            (2 << 6) | (1 << 1),  # DKAD_C 2: KAD not allowed; RDMC_C 1: no raw mode
            0, 0, 0, ALGORITHM_AES256_GCM,
        )
        # EXTDECC and CFG_P 0: external control and configuration are not reported.
        head = CAPABILITIES.pack(PAGE_CAPABILITIES, CAPABILITIES.size - 4 + len(desc), 0)
        return head + desc

    def _status(self) -> bytes:
        enc = self.encryption
        flags = ((enc.ceem & 0x3) << 1) | 0x01  # CEEMS; RDMD: raw decryption is never on
        return STATUS.pack(PAGE_STATUS, STATUS.size - 4, (enc.scope << 5) | enc.scope,
                           enc.encryption_mode, enc.decryption_mode, enc.algorithm_index,
                           enc.key_instance & 0xFFFFFFFF, flags)

    def _next_block(self) -> bytes:
        medium: Medium = self._loaded()
        try:
            pos = medium.position()
            flag = medium.next_encrypted()
        except TapeError as err:
            raise self.tape_sense(err) from err
        algorithm, rdmds = 0, 0
        if flag is None:
            status = NB_NOT_A_BLOCK
        elif not flag:
            status = NB_NOT_ENCRYPTED
        else:
            algorithm, rdmds = ALGORITHM_INDEX, 0x01  # protected from raw reads
            status = (NB_ENCRYPTED_CAN_DECRYPT if self.encryption.can_decrypt
                      else NB_ENCRYPTED_NO_KEY)
        # Compression status 0: records are not compressed by the drive (the pool is).
        return NEXT_BLOCK.pack(PAGE_NEXT_BLOCK, NEXT_BLOCK.size - 4, pos.object_id,
                               status, algorithm, rdmds, 0)

    # ---- SECURITY PROTOCOL OUT 20h ------------------------------------------------------

    def tde_out_page(self, page: int, params: bytes) -> None:
        """SECURITY PROTOCOL OUT 20h: only page 0010h (Set Data Encryption)."""
        if page != PAGE_SET_DATA_ENCRYPTION:
            raise ScsiError.cdb(2, 7)
        if len(params) < SET_DATA_ENCRYPTION.size:
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        (code, length, control, flags, enc_mode, dec_mode, algorithm, key_format, _kadf,
         key_length) = SET_DATA_ENCRYPTION.unpack_from(params)
        if code != page:
            raise ScsiError.param(0, 7)
        if 4 + length > len(params):
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        scope = control >> 5
        if scope > SCOPE_ALL:
            raise ScsiError.param(4, 7)
        if scope == SCOPE_PUBLIC:
            return  # the nexus uses the shared parameters: ours are the only ones
        ceem, rdmc = flags >> 6, (flags >> 4) & 0x3
        if rdmc not in (0, 3):  # raw decryption cannot be enabled
            raise ScsiError.param(5, 5)
        if flags & 0x08:  # SDK: no supplemental decryption keys
            raise ScsiError.param(5, 3)
        if enc_mode not in (ENCRYPT_DISABLE, ENCRYPT_ENCRYPT):
            raise ScsiError.param(6, 7)
        if dec_mode not in (DECRYPT_DISABLE, DECRYPT_DECRYPT, DECRYPT_MIXED):
            raise ScsiError.param(7, 7)
        if enc_mode == ENCRYPT_DISABLE and dec_mode == DECRYPT_DISABLE:
            self.encryption = EncryptionState(
                scope=scope, ceem=ceem, key_instance=self.encryption.key_instance + 1)
            return
        if algorithm != ALGORITHM_INDEX:
            raise ScsiError.param(8, 7)
        if key_format != KEY_FORMAT_PLAIN:
            raise ScsiError.param(9, 7)
        if key_length != KEY_BYTES:
            raise ScsiError.param(18, 7)
        end = SET_DATA_ENCRYPTION.size + KEY_BYTES
        if 4 + length < end:
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        if 4 + length > end:  # key-associated data descriptors: not allowed
            raise ScsiError.param(end, 7)
        self.encryption = EncryptionState(
            scope=scope, encryption_mode=enc_mode, decryption_mode=dec_mode, ceem=ceem,
            key=bytes(params[SET_DATA_ENCRYPTION.size : end]),
            key_instance=self.encryption.key_instance + 1,
        )

    def tde_out(self, page: int, data_out: DataOut, length: int) -> None:
        self.tde_out_page(page, self.data_out(data_out, length))

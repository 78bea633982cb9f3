"""EXTENDED COPY (LID1, 83h/00h) and RECEIVE COPY RESULTS (84h/00h, 84h/03h): the copy
manager behind VMware's XCOPY offload and `sg_xcopy`.

Supported: Identification CSCD descriptors (E4h) naming a logical unit by a designator of
its VPD 83h page, and block-to-block segment descriptors (02h). A designator of this LU
resolves to our own volume; any other goes to the resolver the daemon passes in (the
volumes of its other LUs), so copies between two volumes of one pool share pages through
`Volume.copy_from` instead of moving data.

Validation happens before any block moves, in the order libiscsi checks it: parameter
list lengths (05/1A/00), descriptor counts (05/26/06, 05/26/08), descriptor type codes
(05/26/07, 05/26/09), then the segments against their targets: a CSCD index that does not
exist is COPY ABORTED / UNREACHABLE COPY TARGET (0A/08/04); a designator that resolves to
no volume, or a segment that runs past the end of its volume, is COPY ABORTED / COPY
TARGET DEVICE NOT REACHABLE (0A/0D/02, what LIO answers); block sizes that differ are
COPY ABORTED / INCORRECT COPY TARGET DEVICE TYPE (0A/0D/03). Errors of the volumes
themselves go through the one mapping in `sbc_base`.

Copies run synchronously inside the command, so a list identifier is never "in progress";
results are held for RECEIVE COPY RESULTS when LIST ID USAGE is 00b, and released once read.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

from handlers.scsi.opcodes import CopyResults, Op
from handlers.scsi.sbc_base import ThinDiskBase
from handlers.scsi.sense import ScsiError, Sense
from handlers.scsi.spc import DataOut, allocation, command, usage
from thur.volume.protocol import Volume

PARAM_HEADER = struct.Struct(">BBHxxxxII")
"""EXTENDED COPY(LID1) parameter list header, 16 bytes: list identifier, STR/LIST ID
USAGE/PRIORITY, CSCD descriptor list length, 4 reserved, segment descriptor list length,
inline data length."""

CSCD_LENGTH = 32
IDENTIFICATION_CSCD = 0xE4
BLOCK_TO_BLOCK = 0x02
SEGMENT_B2B = struct.Struct(">BBHHHxxHQQ")
"""Block device to block device segment descriptor (02h), 28 bytes: type, DC/CAT,
descriptor length (18h), source and destination CSCD ids, 2 reserved, number of blocks,
source LBA, destination LBA."""

OPERATING_PARAMETERS = struct.Struct(">IBxxxHHIIIII2xHBBBB3xB")
"""RECEIVE COPY RESULTS operating parameters (SPC-4 6.18.4) up to the implemented
descriptor list: available data, SNLID, max CSCD count, max segment count, max descriptor
list length, max segment length, max inline data, held data limit, max stream transfer,
total concurrent copies, max concurrent copies, data segment / inline / held data
granularity (log2), implemented descriptor list length."""

COPY_STATUS = struct.Struct(">IBHBI")
"""RECEIVE COPY RESULTS copy status (LID1): available data (8), HDD/copy manager status,
segments processed, transfer count units, transfer count."""

MAX_CSCD_DESCRIPTORS = 8
MAX_SEGMENT_DESCRIPTORS = 64
MAX_DESCRIPTOR_LIST = 2048
HELD_RESULTS = 16
IMPLEMENTED_DESCRIPTORS = bytes([BLOCK_TO_BLOCK, IDENTIFICATION_CSCD])
COMPLETED, COMPLETED_WITH_ERRORS = 0x01, 0x02
HOLD, DISCARD_NO_LIST_ID = 0b00, 0b11


@dataclass(frozen=True, slots=True)
class Segment:
    source: Volume
    destination: Volume
    src_lba: int
    dst_lba: int
    blocks: int


@dataclass(frozen=True, slots=True)
class CopyResult:
    status: int
    segments: int
    nbytes: int

    def encode(self) -> bytes:
        units, count = 0, self.nbytes
        while count > 0xFFFFFFFF:  # 00h bytes, 01h KiB, 02h MiB ... (powers of 2^10)
            units, count = units + 1, count >> 10
        return COPY_STATUS.pack(COPY_STATUS.size - 4, self.status, self.segments, units, count)


class DiskCopy(ThinDiskBase):
    """The third-party copy manager of the thin disk."""

    def init_copy_manager(self) -> None:
        self.copy_results: OrderedDict[int, CopyResult] = OrderedDict()
        self.vpd_pages[0x8F] = self._vpd_third_party_copy

    @property
    def max_segment_bytes(self) -> int:
        return 0xFFFF * self.block_size  # what one 02h descriptor can describe

    # ---- EXTENDED COPY ------------------------------------------------------------------

    @command(Op.EXTENDED_COPY, usage(0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, *(0xFF,) * 4, 0),
             service_action=CopyResults.EXTENDED_COPY_LID1, data_out=True)
    def extended_copy(self, cdb: bytes, data_out: DataOut) -> None:
        length = struct.unpack_from(">I", cdb, 10)[0]
        if length == 0:  # no parameter list: nothing to do
            return
        data = self.data_out(data_out, length)
        if length < PARAM_HEADER.size:
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        list_id, flags, cscd_len, seg_len, inline_len = PARAM_HEADER.unpack_from(data)
        list_usage = (flags >> 3) & 0x03
        if list_usage == 0b01:
            raise ScsiError.param(1, 4)
        if list_usage == DISCARD_NO_LIST_ID and list_id:
            raise ScsiError.param(0, 7)
        if list_usage != DISCARD_NO_LIST_ID:  # a new copy with this id drops held results
            self.copy_results.pop(list_id, None)
        if cscd_len + seg_len > MAX_DESCRIPTOR_LIST:
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        if PARAM_HEADER.size + cscd_len + seg_len + inline_len > length:
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        targets = self._cscd_descriptors(data, cscd_len)
        segments = self._segment_descriptors(data, PARAM_HEADER.size + cscd_len, seg_len)
        plan = [self._segment(targets, *s) for s in segments]
        done = nbytes = 0
        try:
            with self.volume_errors():
                for seg in plan:
                    if seg.blocks:
                        seg.destination.copy_from(seg.source, seg.src_lba, seg.dst_lba,
                                                  seg.blocks)
                    done += 1
                    nbytes += seg.blocks * self.block_size
        except ScsiError:
            self._hold(list_usage, list_id, CopyResult(COMPLETED_WITH_ERRORS, done, nbytes))
            raise
        self._hold(list_usage, list_id, CopyResult(COMPLETED, done, nbytes))

    def _cscd_descriptors(self, data: bytes, cscd_len: int) -> list[bytes]:
        if cscd_len % CSCD_LENGTH:
            raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
        if cscd_len // CSCD_LENGTH > MAX_CSCD_DESCRIPTORS:
            raise ScsiError(Sense.TOO_MANY_TARGET_DESCRIPTORS)
        out = []
        for pos in range(PARAM_HEADER.size, PARAM_HEADER.size + cscd_len, CSCD_LENGTH):
            if data[pos] != IDENTIFICATION_CSCD:
                raise ScsiError(Sense.UNSUPPORTED_TARGET_DESCRIPTOR_TYPE)
            out.append(bytes(data[pos : pos + CSCD_LENGTH]))
        return out

    def _segment_descriptors(self, data: bytes, start: int, seg_len: int
                             ) -> list[tuple[int, int, int, int, int, int]]:
        out = []
        pos, end = start, start + seg_len
        while pos < end:
            if len(out) == MAX_SEGMENT_DESCRIPTORS:
                raise ScsiError(Sense.TOO_MANY_SEGMENT_DESCRIPTORS)
            if pos + 4 > end:
                raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
            if data[pos] != BLOCK_TO_BLOCK:
                raise ScsiError(Sense.UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE)
            desc_len = struct.unpack_from(">H", data, pos + 2)[0]
            if desc_len != SEGMENT_B2B.size - 4:
                raise ScsiError.param(pos + 2, 7)
            if pos + SEGMENT_B2B.size > end:
                raise ScsiError(Sense.PARAMETER_LIST_LENGTH_ERROR)
            _, _, _, src_id, dst_id, blocks, src_lba, dst_lba = SEGMENT_B2B.unpack_from(data, pos)
            out.append((pos, src_id, dst_id, blocks, src_lba, dst_lba))
            pos += SEGMENT_B2B.size
        return out

    def _segment(self, targets: list[bytes], pos: int, src_id: int, dst_id: int,
                 blocks: int, src_lba: int, dst_lba: int) -> Segment:
        source = self._target(targets, src_id)
        destination = self._target(targets, dst_id)
        if source.block_size != destination.block_size:
            raise ScsiError(Sense.INCORRECT_COPY_TARGET_TYPE)
        if src_lba + blocks > source.num_blocks or dst_lba + blocks > destination.num_blocks:
            raise ScsiError(Sense.COPY_TARGET_NOT_REACHABLE)
        if destination is self.volume:
            self.check_writable()
        return Segment(source, destination, src_lba, dst_lba, blocks)

    def _target(self, targets: list[bytes], index: int) -> Volume:
        if index >= len(targets):
            raise ScsiError(Sense.UNREACHABLE_COPY_TARGET)
        desc = targets[index]
        # byte 1: LU ID TYPE (ignored, SPC-4), NUL (obsolete), peripheral device type
        if desc[1] & 0x1F != self.PERIPHERAL_TYPE:
            raise ScsiError(Sense.INCORRECT_COPY_TARGET_TYPE)
        association, length = (desc[5] >> 4) & 0x03, desc[7]
        if association != 0 or length > 16:  # a logical unit, designator in 20 bytes
            raise ScsiError(Sense.COPY_TARGET_NOT_REACHABLE)
        designator = desc[8 : 8 + length]
        block_length = int.from_bytes(desc[29:32], "big")
        volume: Volume | None
        if designator in (self.identity.naa(), self.identity.t10_vendor_id()):
            volume = self.volume
        else:
            volume = self.resolver(designator) if self.resolver else None
        if volume is None:
            raise ScsiError(Sense.COPY_TARGET_NOT_REACHABLE)
        if block_length and block_length != volume.block_size:
            raise ScsiError(Sense.INCORRECT_COPY_TARGET_TYPE)
        return volume

    def _hold(self, list_usage: int, list_id: int, result: CopyResult) -> None:
        if list_usage != HOLD:
            return
        self.copy_results.pop(list_id, None)
        self.copy_results[list_id] = result
        while len(self.copy_results) > HELD_RESULTS:
            self.copy_results.popitem(last=False)

    # ---- RECEIVE COPY RESULTS -----------------------------------------------------------

    @command(Op.RECEIVE_COPY_RESULTS, usage(0x84, 0x00, 0xFF, 0, 0, 0, 0, 0, 0, 0, *(0xFF,) * 4,
                                            0), service_action=CopyResults.COPY_STATUS)
    def receive_copy_status(self, cdb: bytes, data_out: DataOut) -> bytes:
        result = self.copy_results.pop(cdb[2], None)
        if result is None:
            raise ScsiError.cdb(2, 7)  # no held results for this list identifier
        return allocation(result.encode(), struct.unpack_from(">I", cdb, 10)[0])

    @command(Op.RECEIVE_COPY_RESULTS, usage(0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, *(0xFF,) * 4,
                                            0),
             service_action=CopyResults.OPERATING_PARAMETERS)
    def receive_operating_parameters(self, cdb: bytes, data_out: DataOut) -> bytes:
        granularity = self.block_size.bit_length() - 1
        head = OPERATING_PARAMETERS.pack(
            OPERATING_PARAMETERS.size + len(IMPLEMENTED_DESCRIPTORS) - 4,
            0x01,  # SNLID: LIST ID USAGE 11b is supported
            MAX_CSCD_DESCRIPTORS, MAX_SEGMENT_DESCRIPTORS, MAX_DESCRIPTOR_LIST,
            self.max_segment_bytes, 0, 0, 0,  # no inline data, no held data, no streams
            1, 1, granularity, granularity, granularity, len(IMPLEMENTED_DESCRIPTORS),
        )
        return allocation(head + IMPLEMENTED_DESCRIPTORS, struct.unpack_from(">I", cdb, 10)[0])

    # ---- VPD 8Fh ------------------------------------------------------------------------

    def _vpd_third_party_copy(self) -> bytes:
        """Third-party copy VPD page (SPC-4 7.8.17): the LID1 descriptors."""
        commands = bytes([Op.EXTENDED_COPY, 1, CopyResults.EXTENDED_COPY_LID1,
                          Op.RECEIVE_COPY_RESULTS, 2, CopyResults.COPY_STATUS,
                          CopyResults.OPERATING_PARAMETERS])
        parameter_data = struct.pack(">xxHHII14x", MAX_CSCD_DESCRIPTORS,
                                     MAX_SEGMENT_DESCRIPTORS, MAX_DESCRIPTOR_LIST, 0)
        general = struct.pack(">IIIBB18x", 1, 1, self.max_segment_bytes,
                              self.block_size.bit_length() - 1,
                              self.block_size.bit_length() - 1)
        return (
            _tpc_descriptor(0x0001, bytes([len(commands)]) + commands)  # supported commands
            + _tpc_descriptor(0x0004, parameter_data)  # parameter data
            + _tpc_descriptor(0x0005, bytes([len(IMPLEMENTED_DESCRIPTORS)])
                              + IMPLEMENTED_DESCRIPTORS)  # supported descriptors
            + _tpc_descriptor(0x0080, general)  # general copy operations
        )


def _tpc_descriptor(kind: int, body: bytes) -> bytes:
    """A third-party copy descriptor, its body padded to a multiple of 4 bytes."""
    body = body + bytes(-len(body) % 4)
    return struct.pack(">HH", kind, len(body)) + body

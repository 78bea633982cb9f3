"""cffi model of the TCMU kernel UAPI, ``linux/target_core_user.h`` (mailbox version 2).

Only cffi's ABI mode is used (``cdef`` + ``from_buffer``/``cast`` over the shared map), so
no C compiler is needed at run time. cffi computes every offset from the declarations
below, which reproduce the header's layout rules exactly:

* ``struct tcmu_mailbox`` is packed, but ``cmd_tail`` carries ``aligned(64)`` so that the
  field userspace writes sits on its own cache line. cffi has no alignment attribute,
  so the padding the compiler inserts is spelled out: ``cmd_tail`` @64, sizeof 128 (the
  kernel's ``CMDR_OFF``).
* ``struct tcmu_cmd_entry`` is packed, but the ``req``/``rsp`` structs inside its anonymous
  union are *not*. That is why ``req.cdb_off`` lands @24 and ``req.iov[]`` @48 rather
  than at the packed offsets a naive ``_pack_ = 1`` would give. The inner structs are
  declared in a separate, unpacked ``cdef`` and then embedded in the packed outer one.
* ``struct tcmu_tmr_entry`` is packed throughout (``cmd_ids[]`` @32).

``struct iovec`` is the kernel's (``void *iov_base; size_t iov_len``); in the ring its base
is an *offset from the start of the map*, not a pointer. 64-bit userspace only.
"""

from __future__ import annotations

from enum import IntEnum

from cffi import FFI

ffi = FFI()

# Unpacked declarations: the members of the union inside struct tcmu_cmd_entry.
ffi.cdef(
    """
    struct iovec {
        void *iov_base;
        size_t iov_len;
    };

    struct tcmu_cmd_entry_req {
        uint32_t iov_cnt;
        uint32_t iov_bidi_cnt;
        uint32_t iov_dif_cnt;
        uint64_t cdb_off;
        uint64_t __pad1;
        uint64_t __pad2;
        struct iovec iov[];
    };

    struct tcmu_cmd_entry_rsp {
        uint8_t scsi_status;
        uint8_t __pad1;
        uint16_t __pad2;
        uint32_t read_len;
        char sense_buffer[96];
    };
    """
)

# Packed declarations, as in the header.
ffi.cdef(
    """
    struct tcmu_mailbox {
        uint16_t version;
        uint16_t flags;
        uint32_t cmdr_off;
        uint32_t cmdr_size;
        uint32_t cmd_head;
        uint8_t __align_cmd_tail[48];   /* __aligned__(ALIGN_SIZE) on cmd_tail */
        uint32_t cmd_tail;
        uint8_t __align_end[60];        /* struct rounded up to its 64-byte alignment */
    };

    struct tcmu_cmd_entry_hdr {
        uint32_t len_op;
        uint16_t cmd_id;
        uint8_t kflags;
        uint8_t uflags;
    };

    struct tcmu_cmd_entry {
        struct tcmu_cmd_entry_hdr hdr;
        union {
            struct tcmu_cmd_entry_req req;
            struct tcmu_cmd_entry_rsp rsp;
        };
    };

    struct tcmu_tmr_entry {
        struct tcmu_cmd_entry_hdr hdr;
        uint8_t tmr_type;
        uint8_t __pad1;
        uint16_t __pad2;
        uint32_t cmd_cnt;
        uint64_t __pad3;
        uint64_t __pad4;
        uint16_t cmd_ids[];
    };
    """,
    packed=True,
)

TCMU_MAILBOX_VERSION = 2
ALIGN_SIZE = 64

TCMU_MAILBOX_FLAG_CAP_OOOC = 1 << 0
TCMU_MAILBOX_FLAG_CAP_READ_LEN = 1 << 1
TCMU_MAILBOX_FLAG_CAP_TMR = 1 << 2
TCMU_MAILBOX_FLAG_CAP_KEEP_BUF = 1 << 3

TCMU_UFLAG_UNKNOWN_OP = 0x1
TCMU_UFLAG_READ_LEN = 0x2
TCMU_UFLAG_KEEP_BUF = 0x4

TCMU_OP_MASK = 0x7
TCMU_OP_ALIGN_SIZE = 8  # sizeof(__u64): every entry length is a multiple of this
TCMU_SENSE_BUFFERSIZE = 96


class TcmuOp(IntEnum):
    """The low three bits of ``hdr.len_op``."""

    PAD = 0
    CMD = 1
    TMR = 2


class TcmuTmr(IntEnum):
    """``tcmu_tmr_entry.tmr_type``."""

    UNKNOWN = 0
    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LUN_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    LUN_RESET_PRO = 128  # pseudo reset caused by a PERSISTENT RESERVE OUT


TCMU_OP_PAD = TcmuOp.PAD
TCMU_OP_CMD = TcmuOp.CMD
TCMU_OP_TMR = TcmuOp.TMR


def hdr_get_op(len_op: int) -> int:
    """The entry type carried in the low bits of ``len_op``."""
    return len_op & TCMU_OP_MASK


def hdr_get_len(len_op: int) -> int:
    """The entry length in bytes (always 8-aligned, so the low bits are free)."""
    return len_op & ~TCMU_OP_MASK & 0xFFFFFFFF


def make_len_op(length: int, op: int) -> int:
    """Pack an entry length and type the way ``tcmu_hdr_set_len/op`` do."""
    return (length & ~TCMU_OP_MASK & 0xFFFFFFFF) | (op & TCMU_OP_MASK)


# Layout constants derived once from the cdef (not hard-coded), for code paths that do
# bounds arithmetic without touching cffi objects.
MAILBOX_SIZE = ffi.sizeof("struct tcmu_mailbox")  # == CMDR_OFF
HDR_SIZE = ffi.sizeof("struct tcmu_cmd_entry_hdr")
CMD_ENTRY_SIZE = ffi.sizeof("struct tcmu_cmd_entry")  # minimum CMD entry length
IOV_OFFSET = ffi.offsetof("struct tcmu_cmd_entry", "req", "iov")
IOV_SIZE = ffi.sizeof("struct iovec")
TMR_ENTRY_SIZE = ffi.sizeof("struct tcmu_tmr_entry")
TMR_IDS_OFFSET = ffi.offsetof("struct tcmu_tmr_entry", "cmd_ids")

__all__ = [
    "ALIGN_SIZE",
    "CMD_ENTRY_SIZE",
    "HDR_SIZE",
    "IOV_OFFSET",
    "IOV_SIZE",
    "MAILBOX_SIZE",
    "TCMU_MAILBOX_FLAG_CAP_KEEP_BUF",
    "TCMU_MAILBOX_FLAG_CAP_OOOC",
    "TCMU_MAILBOX_FLAG_CAP_READ_LEN",
    "TCMU_MAILBOX_FLAG_CAP_TMR",
    "TCMU_MAILBOX_VERSION",
    "TCMU_OP_ALIGN_SIZE",
    "TCMU_OP_CMD",
    "TCMU_OP_MASK",
    "TCMU_OP_PAD",
    "TCMU_OP_TMR",
    "TCMU_SENSE_BUFFERSIZE",
    "TCMU_UFLAG_KEEP_BUF",
    "TCMU_UFLAG_READ_LEN",
    "TCMU_UFLAG_UNKNOWN_OP",
    "TMR_ENTRY_SIZE",
    "TMR_IDS_OFFSET",
    "TcmuOp",
    "TcmuTmr",
    "ffi",
    "hdr_get_len",
    "hdr_get_op",
    "make_len_op",
]

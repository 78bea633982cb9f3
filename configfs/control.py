"""Pure renderers/parsers for the text LIO reads and writes for a user backstore."""

from __future__ import annotations

from .model import UserBackstore


def render_control_options(bs: UserBackstore) -> list[str]:
    """The ``key=value`` options written to ``core/user_N/<name>/control`` before enable.

    Order matters only for readability of kernel errors; each option is written on its
    own so a kernel that rejects one (too old for cmd_ring_size_mb, say) names it.
    ``nl_reply_supported=-1`` makes the kernel never wait for a netlink reply from a
    tcmu-runner that does not exist here; without it device add/remove can stall.
    max_data_area_mb / data_pages_per_blk / cmd_ring_size_mb are fixed once the ring
    is allocated at enable, so they can only go here, never into attrib/ later.
    """
    opts = [
        f"dev_config={bs.dev_config}",
        f"dev_size={bs.size_bytes}",
        f"hw_block_size={bs.hw_block_size}",
        f"hw_max_sectors={bs.hw_max_sectors}",
        "nl_reply_supported=-1",
        f"max_data_area_mb={bs.max_data_area_mb}",
    ]
    if bs.data_pages_per_blk is not None:
        opts.append(f"data_pages_per_blk={bs.data_pages_per_blk}")
    if bs.cmd_ring_size_mb is not None:
        opts.append(f"cmd_ring_size_mb={bs.cmd_ring_size_mb}")
    return opts


def render_control_string(bs: UserBackstore) -> str:
    """All control options as the one comma-separated string the kernel also accepts."""
    return ",".join(render_control_options(bs))


def render_attributes(bs: UserBackstore) -> dict[str, str]:
    """``attrib/`` files set after enable and before the device is exported.

    cmd_time_out must be written before any LUN links the device (the kernel refuses
    it while exports exist); qfull_time_out and tmr_notification may change later.
    """
    return {
        "cmd_time_out": str(bs.cmd_time_out),
        "qfull_time_out": str(bs.qfull_time_out),
        "tmr_notification": "1" if bs.tmr_notification else "0",
    }


LIVE_ATTRIBUTES = ("qfull_time_out", "tmr_notification")


def parse_aptpl(text: str) -> list[str]:
    """Turn an APTPL file LIO wrote into the lines it accepts back in
    ``pr/res_aptpl_metadata`` (one comma-joined line per registration).

    LIO writes APTPL registrations to ``<db_root>/pr/aptpl_<unit serial>`` but never
    reads them back itself: whoever recreates the device after a reboot must feed them
    in before the device is exported, or the reservations are lost. The file is blocks
    of ``key=value`` lines between ``PR_REG_START: n`` and ``PR_REG_END: n``.
    """
    registrations: list[str] = []
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("PR_REG_START:"):
            current = []
        elif line.startswith("PR_REG_END:"):
            if current:
                registrations.append(",".join(current))
            current = None
        elif current is not None and "=" in line:
            current.append(line)
    return registrations


def parse_info(text: str) -> dict[str, str]:
    """Parse a backstore ``info`` file ("Status: ACTIVATED  Config: thur/tape0 ...")
    into a dict. Values are single tokens; keys may contain spaces."""
    fields: dict[str, str] = {}
    tokens = text.split()
    key: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.endswith(":") and i + 1 < len(tokens):
            key.append(tok[:-1])
            fields[" ".join(key)] = tokens[i + 1]
            key = []
            i += 2
        else:
            key.append(tok)
            i += 1
    return fields

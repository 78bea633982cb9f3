"""The contract between the TCMU ring and the SCSI command engines.

An engine is one object per logical unit. The ring hands it each CDB (and, for
commands that carry data from the initiator, the gathered data-out bytes) and
writes back whatever `Response` it returns. Engines never touch the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

GOOD = 0x00
CHECK_CONDITION = 0x02
BUSY = 0x08
RESERVATION_CONFLICT = 0x18
TASK_SET_FULL = 0x28


@dataclass(slots=True)
class Response:
    """What a logical unit answers to one command.

    `data` is the data-in for the initiator; the ring copies at most the
    transport's buffer length and reports a shorter transfer with READ_LEN.
    `sense` is fixed- or descriptor-format sense bytes (empty when GOOD).
    """

    status: int = GOOD
    sense: bytes = b""
    data: bytes | bytearray | memoryview = field(default=b"")


class LogicalUnit(Protocol):
    """One SCSI logical unit served through a TCMU device."""

    def execute(self, cdb: bytes, data_out: memoryview | None) -> Response:
        """Run one command. Must never raise: every failure becomes sense."""
        ...

    def wants_data_out(self, cdb: bytes) -> bool:
        """True when this command carries data from the initiator (a write).

        TCMU entries do not say the data direction, so the ring asks the engine.
        """
        ...

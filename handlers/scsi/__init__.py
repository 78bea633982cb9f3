"""SCSI device emulations: pure command engines, one object per logical unit."""

from handlers.scsi.engine import CHECK_CONDITION, GOOD, LogicalUnit, Response

__all__ = ["CHECK_CONDITION", "GOOD", "LogicalUnit", "Response"]

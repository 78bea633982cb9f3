"""Typed cartridge errors. They carry no SCSI: the drive maps them to sense in one place."""

from __future__ import annotations


class TapeError(Exception):
    """Base of every error a `Medium` raises."""


class EndOfData(TapeError):
    """Read or positioning reached end-of-data."""


class VolumeOverflow(TapeError):
    """The record does not fit before the physical end of the partition (not written)."""


class WormViolation(TapeError):
    """Overwrite, erase or format refused on a WORM cartridge."""


class WriteProtected(TapeError):
    """The cartridge is write protected."""


class InvalidPartition(TapeError):
    """A partition that does not exist, or a layout that does not fit the cartridge."""


class MediumCorrupt(TapeError):
    """Stored data failed verification (a chunk's hash did not match)."""


class BackendFailure(TapeError):
    """Local disk or backend I/O failed; nothing was acknowledged."""


class Backpressure(TapeError):
    """The cache stayed full past the configured wait; the host should retry."""

"""Cartridge barcodes (primary volume tags), as an operator types them.

Rules (what LTO libraries and backup software accept):
- 6 to 8 characters, upper-case letters A-Z and digits 0-9 only (no spaces: the tag
  is space padded in READ ELEMENT STATUS, so a space would be ambiguous);
- an LTO media suffix such as `L8` is just the last two characters of an 8-character
  label (`ABC123L8`): accepted, and reported as the media type;
- a `CLN` prefix marks a cleaning cartridge.

Lower case is refused rather than silently upper-cased: the label is an identity that
backup catalogues store verbatim, and two spellings of one tape must not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_LENGTH = 6
MAX_LENGTH = 8
CLEANING_PREFIX = "CLN"
_VALID = re.compile(r"[A-Z0-9]{6,8}")
_LTO_SUFFIX = re.compile(r"L[1-9A-Z]")


class BarcodeError(ValueError):
    """A barcode that cannot be used; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class Barcode:
    text: str

    @property
    def cleaning(self) -> bool:
        return self.text.startswith(CLEANING_PREFIX)

    @property
    def media_suffix(self) -> str | None:
        """`L8` in `ABC123L8`; None when the label carries no LTO media suffix."""
        tail = self.text[-2:]
        if len(self.text) == MAX_LENGTH and _LTO_SUFFIX.fullmatch(tail):
            return tail
        return None

    def __str__(self) -> str:
        return self.text


def parse_barcode(text: str) -> Barcode:
    if not isinstance(text, str):
        raise BarcodeError(f"barcode must be a string, not {type(text).__name__}")
    if not MIN_LENGTH <= len(text) <= MAX_LENGTH:
        raise BarcodeError(
            f"barcode {text!r} has {len(text)} characters; use {MIN_LENGTH} to {MAX_LENGTH}"
        )
    if not _VALID.fullmatch(text):
        hint = " (use upper case)" if _VALID.fullmatch(text.upper()) else ""
        raise BarcodeError(
            f"barcode {text!r} may hold only upper-case letters A-Z and digits 0-9{hint}"
        )
    return Barcode(text)

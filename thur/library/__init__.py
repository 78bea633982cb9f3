"""The tape library: identity, inventory and the changer model."""

from thur.library.identity import LibraryIdentity, load_or_mint

__all__ = ["LibraryIdentity", "load_or_mint"]

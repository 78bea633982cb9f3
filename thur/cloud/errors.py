"""Typed errors every backend raises; nothing above a backend sees SDK exceptions."""

from __future__ import annotations


class BackendError(Exception):
    """Base of all backend errors."""


class BackendTransient(BackendError):
    """Worth retrying: timeouts, throttling, 5xx, connection resets."""


class BackendPermanent(BackendError):
    """Retrying will not help: bad credentials, no permission, no bucket."""


class NotFound(BackendError):
    """The object does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} not found")
        self.key = key


class AlreadyExists(BackendError):
    """A conditional create found the object already there."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} already exists")
        self.key = key

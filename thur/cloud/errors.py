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


# The three permanent failures an operator fixes in different places (the key,
# the bucket, the policy), so `check` can tell them which one to look at.


class CredentialsRejected(BackendPermanent):
    """The service refused the credentials (unknown key, bad secret, expired token), or none."""


class BucketMissing(BackendPermanent):
    """The bucket (Azure: container) does not exist."""


class PermissionDenied(BackendPermanent):
    """The credentials are valid but not allowed this operation on this bucket."""

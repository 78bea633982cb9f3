"""The `azure` backend (azure-storage-blob): block blobs in one container.

Configured with a connection string (Azurite: its explicit string with a
BlobEndpoint) or an account URL plus credential (account key or SAS token).
Tested against Azurite (tests/integration). The SDK's own retries are
disabled (`retry_total=0`): the tier retries itself.

Error mapping: the service names its error (`x-ms-error-code`), so a missing
container (ContainerNotFound → BucketMissing) is told from a missing blob
(BlobNotFound → NotFound) without an extra request. AuthenticationFailed and
AuthorizationFailure → CredentialsRejected (Azurite answers the latter for a
wrong account key); AuthorizationPermissionMismatch and other 403 →
PermissionDenied (a SAS without that permission); 5xx, 408, 429 and
connection failures → BackendTransient.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .backend import ObjectInfo, check_key
from .errors import (
    AlreadyExists,
    BackendPermanent,
    BackendTransient,
    BucketMissing,
    CredentialsRejected,
    NotFound,
    PermissionDenied,
)

_BAD_CREDENTIALS = {"AuthenticationFailed", "InvalidAuthenticationInfo", "AuthorizationFailure"}


@dataclass(frozen=True, slots=True)
class AzureOptions:
    container: str
    prefix: str = ""
    connection_string: str | None = None
    account_url: str | None = None
    credential: str | None = None  # account key or SAS token
    timeout: float = 60.0  # server-side limit of one operation
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    list_page_size: int = 5000  # blobs per List Blobs call (the service maximum)


class AzureBackend:
    conditional_create = True  # If-None-Match: * via overwrite=False

    def __init__(self, options: AzureOptions, container_client: Any = None) -> None:
        self.options = options
        self._prefix = options.prefix.strip("/") + "/" if options.prefix.strip("/") else ""
        self.name = f"azure://{options.container}/{self._prefix}"
        with _errors(self, ""):
            self._cc = container_client or self._make_client()

    def _make_client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        o = self.options
        kw: dict[str, Any] = dict(
            retry_total=0, connection_timeout=o.connect_timeout, read_timeout=o.read_timeout
        )
        if o.connection_string:
            svc = BlobServiceClient.from_connection_string(o.connection_string, **kw)
        elif o.account_url:
            svc = BlobServiceClient(o.account_url, credential=o.credential, **kw)
        else:
            raise BackendPermanent("azure: need connection_string or account_url")
        return svc.get_container_client(o.container)

    def _name(self, key: str) -> str:
        return self._prefix + check_key(key)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        with _errors(self, key):
            self._cc.upload_blob(
                self._name(key), data, overwrite=not if_absent, timeout=int(self.options.timeout)
            )

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            return b""
        try:
            with _errors(self, key):
                stream = self._cc.download_blob(
                    self._name(key),
                    offset=start if (start or length is not None) else None,
                    length=length,
                    timeout=int(self.options.timeout),
                )
                return stream.readall()
        except _RangeNotSatisfiable:
            return b""  # at or past the end: a short read, as for a file

    def head(self, key: str) -> ObjectInfo:
        with _errors(self, key):
            props = self._cc.get_blob_client(self._name(key)).get_blob_properties(
                timeout=int(self.options.timeout)
            )
        return ObjectInfo(key, int(props.size))

    def delete(self, key: str) -> None:
        try:
            with _errors(self, key):
                self._cc.delete_blob(self._name(key), timeout=int(self.options.timeout))
        except NotFound:
            pass

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with _errors(self, prefix):
            for b in self._cc.list_blobs(
                name_starts_with=self._prefix + prefix,
                results_per_page=self.options.list_page_size,
                timeout=int(self.options.timeout),
            ):
                yield ObjectInfo(b.name[len(self._prefix) :], int(b.size))


class _RangeNotSatisfiable(Exception):
    """Internal: a ranged read starting at or past the end of the blob."""


def _code(e: BaseException) -> str:
    code = getattr(e, "error_code", None) or ""
    return str(getattr(code, "value", code))  # the SDK gives an enum or a plain string


class _errors:
    """Translate azure-core / azure-storage-blob exceptions into the backend error types."""

    def __init__(self, backend: AzureBackend, key: str) -> None:
        self.backend = backend
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> bool:
        if e is None or isinstance(e, NotFound | AlreadyExists | BackendPermanent):
            return False
        from azure.core import exceptions as zx

        o = self.backend.options
        code = _code(e)
        status = int(getattr(e, "status_code", 0) or 0)
        where = f"azure: {self.backend.name}{self.key}"
        if code == "ContainerNotFound":
            account = getattr(getattr(self.backend, "_cc", None), "account_name", None)
            raise BucketMissing(
                f"azure: container {o.container!r} does not exist"
                + (f" in account {account!r}" if account else "")
                + f" ({code})"
            ) from e
        if isinstance(e, zx.ResourceNotFoundError):
            raise NotFound(self.key) from e
        if isinstance(e, zx.ResourceExistsError) or status == 412:
            raise AlreadyExists(self.key) from e
        if code == "InvalidRange" or status == 416:
            raise _RangeNotSatisfiable() from e
        if isinstance(e, zx.ClientAuthenticationError) or code in _BAD_CREDENTIALS:
            raise CredentialsRejected(
                f"azure: credentials rejected by the account ({code or status}): "
                "check the account key, SAS token or connection string"
            ) from e
        if isinstance(e, zx.HttpResponseError) and status:
            if status >= 500 or status in (408, 429):
                raise BackendTransient(f"{where}: {status} {code}") from e
            if status == 403:
                raise PermissionDenied(f"{where}: {status} {code}") from e
            raise BackendPermanent(f"{where}: {status} {code}") from e
        if isinstance(e, zx.AzureError | OSError):  # ServiceRequestError, timeouts
            raise BackendTransient(f"{where}: {e}") from e
        return False

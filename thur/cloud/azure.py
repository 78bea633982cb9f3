"""The `azure` backend (azure-storage-blob): block blobs in one container.

Configured with a connection string (Azurite: UseDevelopmentStorage=true or
its explicit string) or an account URL plus credential. Not yet exercised by
the test suite: integration tests against Azurite are the next increment. The
SDK's own retries are disabled (`retry_total=0`): the tier retries itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .backend import ObjectInfo, check_key
from .errors import AlreadyExists, BackendPermanent, BackendTransient, NotFound


@dataclass(frozen=True, slots=True)
class AzureOptions:
    container: str
    prefix: str = ""
    connection_string: str | None = None
    account_url: str | None = None
    credential: str | None = None  # account key or SAS; None: DefaultAzureCredential n/a
    timeout: float = 60.0


class AzureBackend:
    conditional_create = True  # If-None-Match: * via overwrite=False

    def __init__(self, options: AzureOptions, container_client: Any = None) -> None:
        self.options = options
        self.name = f"azure://{options.container}/{options.prefix}"
        self._prefix = options.prefix.strip("/") + "/" if options.prefix.strip("/") else ""
        with _errors(""):
            self._cc = container_client or self._make_client()

    def _make_client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        o = self.options
        if o.connection_string:
            svc = BlobServiceClient.from_connection_string(o.connection_string, retry_total=0)
        elif o.account_url:
            svc = BlobServiceClient(o.account_url, credential=o.credential, retry_total=0)
        else:
            raise BackendPermanent("azure: need connection_string or account_url")
        return svc.get_container_client(o.container)

    def _name(self, key: str) -> str:
        return self._prefix + check_key(key)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        with _errors(key):
            self._cc.upload_blob(
                self._name(key), data, overwrite=not if_absent, timeout=int(self.options.timeout)
            )

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            return b""
        with _errors(key):
            stream = self._cc.download_blob(
                self._name(key),
                offset=start if (start or length is not None) else None,
                length=length,
                timeout=int(self.options.timeout),
            )
            return stream.readall()

    def head(self, key: str) -> ObjectInfo:
        with _errors(key):
            props = self._cc.get_blob_client(self._name(key)).get_blob_properties()
        return ObjectInfo(key, int(props.size))

    def delete(self, key: str) -> None:
        try:
            with _errors(key):
                self._cc.delete_blob(self._name(key))
        except NotFound:
            pass

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with _errors(prefix):
            for b in self._cc.list_blobs(name_starts_with=self._prefix + prefix):
                yield ObjectInfo(b.name[len(self._prefix) :], int(b.size))


class _errors:
    def __init__(self, key: str) -> None:
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> bool:
        if e is None or isinstance(e, NotFound | AlreadyExists | BackendPermanent):
            return False
        from azure.core import exceptions as zx

        code = str(getattr(e, "error_code", "") or "")
        if isinstance(e, zx.ResourceNotFoundError):
            if code == "ContainerNotFound":
                raise BackendPermanent(f"azure: container {self.key!r}: {code}") from e
            raise NotFound(self.key) from e
        if isinstance(e, zx.ResourceExistsError):
            raise AlreadyExists(self.key) from e
        if isinstance(e, zx.ClientAuthenticationError):
            raise BackendPermanent(f"azure: {self.key}: {e}") from e
        if isinstance(e, zx.HttpResponseError):
            status = int(getattr(e, "status_code", 0) or 0)
            if status >= 500 or status in (408, 429):
                raise BackendTransient(f"azure: {self.key}: {status} {code}") from e
            if status == 412:
                raise AlreadyExists(self.key) from e
            raise BackendPermanent(f"azure: {self.key}: {status} {code}") from e
        if isinstance(e, zx.AzureError | OSError):  # ServiceRequestError, timeouts
            raise BackendTransient(f"azure: {self.key}: {e}") from e
        return False

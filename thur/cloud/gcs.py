"""The `gcs` backend (google-cloud-storage).

Tested against fake-gcs-server (tests/integration). An emulator is reached
through `endpoint` (or the library's STORAGE_EMULATOR_HOST); with either and
no credentials file, anonymous credentials are used. The library's own
retries are disabled (`retry=None` on every call): the tier retries transient
errors itself.

Error mapping: a 404 from a listing or an upload can only mean the bucket is
missing (BucketMissing); from a read, head or delete it may be the object or
the bucket, so on that (rare) path we ask whether the bucket exists. 401 and
credential failures → CredentialsRejected, 403 → PermissionDenied, 429/5xx,
connection errors and torn transfers → BackendTransient.
"""

from __future__ import annotations

import os
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


@dataclass(frozen=True, slots=True)
class GcsOptions:
    bucket: str
    prefix: str = ""
    project: str | None = None
    credentials_file: str | None = None  # None: application default credentials
    endpoint: str | None = None  # e.g. http://127.0.0.1:4443 (an emulator); None: Google
    connect_timeout: float = 10.0
    timeout: float = 60.0  # read timeout of one request
    list_page_size: int = 1000  # objects per list call (the service maximum)


class GcsBackend:
    conditional_create = True  # ifGenerationMatch=0

    def __init__(self, options: GcsOptions, client: Any = None) -> None:
        self.options = options
        self._prefix = options.prefix.strip("/") + "/" if options.prefix.strip("/") else ""
        self.name = f"gs://{options.bucket}/{self._prefix}"
        self._timeout = (options.connect_timeout, options.timeout)
        with _errors(self, "", bucket=True):
            self._client = client or self._make_client()
            self._bucket = self._client.bucket(options.bucket)

    def _make_client(self) -> Any:
        from google.cloud import storage

        o = self.options
        client_options = {"api_endpoint": o.endpoint} if o.endpoint else None
        if o.credentials_file:
            try:
                return storage.Client.from_service_account_json(
                    o.credentials_file, project=o.project, client_options=client_options
                )
            except (OSError, ValueError) as e:  # unreadable or not a key file
                raise CredentialsRejected(
                    f"gcs: credentials file {o.credentials_file!r} is unusable: {e}"
                ) from e
        if o.endpoint or os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            return storage.Client(
                project=o.project or "thur",
                credentials=AnonymousCredentials(),
                client_options=client_options,
            )
        return storage.Client(project=o.project)

    def _blob(self, key: str) -> Any:
        return self._bucket.blob(self._prefix + check_key(key))

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        with _errors(self, key, bucket=True):
            self._blob(key).upload_from_string(
                data,
                content_type="application/octet-stream",
                if_generation_match=0 if if_absent else None,
                timeout=self._timeout,
                retry=None,
            )

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            return b""
        end = None if length is None else start + length - 1  # inclusive
        try:
            with _errors(self, key):
                return self._blob(key).download_as_bytes(
                    start=start or None, end=end, timeout=self._timeout, retry=None
                )
        except _RangeNotSatisfiable:
            return b""  # at or past the end: a short read, as for a file
        except NotFound:
            self._raise_if_no_bucket()
            raise

    def head(self, key: str) -> ObjectInfo:
        with _errors(self, key):
            blob = self._bucket.get_blob(
                self._prefix + check_key(key), timeout=self._timeout, retry=None
            )
        if blob is None:  # get_blob maps any 404 to None, the bucket's too
            self._raise_if_no_bucket()
            raise NotFound(key)
        return ObjectInfo(key, int(blob.size))

    def delete(self, key: str) -> None:
        try:
            with _errors(self, key):
                self._blob(key).delete(timeout=self._timeout, retry=None)
        except NotFound:
            self._raise_if_no_bucket()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        blobs = self._client.list_blobs(
            self._bucket,
            prefix=self._prefix + prefix,
            page_size=self.options.list_page_size,
            timeout=self._timeout,
            retry=None,
        )
        with _errors(self, prefix, bucket=True):
            for blob in blobs:
                yield ObjectInfo(blob.name[len(self._prefix) :], int(blob.size))

    def _raise_if_no_bucket(self) -> None:
        """After an object-level 404: raise BucketMissing if that was the cause."""
        with _errors(self, "", bucket=True):
            exists = self._bucket.exists(timeout=self._timeout, retry=None)
        if not exists:
            raise _bucket_missing(self, "exists() is false")


def _bucket_missing(backend: GcsBackend, detail: str) -> BucketMissing:
    where = backend.options.endpoint or os.environ.get("STORAGE_EMULATOR_HOST") or "Google"
    return BucketMissing(
        f"gcs: bucket {backend.options.bucket!r} does not exist at {where} ({detail})"
    )


class _RangeNotSatisfiable(Exception):
    """Internal: a ranged read starting at or past the end of the object."""


class _errors:
    """Translate google-cloud-storage exceptions into the backend error types."""

    def __init__(self, backend: GcsBackend, key: str, *, bucket: bool = False) -> None:
        self.backend = backend
        self.key = key
        self.bucket = bucket  # a 404 here can only mean the bucket is missing

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> bool:
        if e is None or isinstance(e, NotFound | AlreadyExists | BackendPermanent):
            return False
        import requests
        from google.api_core import exceptions as gx
        from google.auth import exceptions as ax
        from google.cloud.storage import exceptions as sx

        where = f"gcs: {self.backend.name}{self.key}"
        if isinstance(e, gx.NotFound):
            if self.bucket:
                raise _bucket_missing(self.backend, str(e.message)) from e
            raise NotFound(self.key) from e
        if isinstance(e, gx.PreconditionFailed):
            raise AlreadyExists(self.key) from e
        if isinstance(e, gx.RequestRangeNotSatisfiable):
            raise _RangeNotSatisfiable() from e
        if isinstance(e, gx.TooManyRequests | gx.ServerError) or (
            isinstance(e, gx.GoogleAPICallError) and e.code == 408
        ):
            raise BackendTransient(f"{where}: {e}") from e
        if isinstance(e, gx.Unauthorized | ax.DefaultCredentialsError | ax.RefreshError):
            raise CredentialsRejected(f"gcs: credentials rejected or missing: {e}") from e
        if isinstance(e, gx.Forbidden):
            raise PermissionDenied(f"{where}: {e.message}") from e
        if isinstance(e, gx.GoogleAPICallError):
            raise BackendPermanent(f"{where}: {e}") from e
        # Torn transfers (a download cut short fails its checksum, an upload
        # session answers oddly after a restart) and network failures.
        if isinstance(e, sx.InvalidResponse):
            status = int(getattr(getattr(e, "response", None), "status_code", 0) or 0)
            if 400 <= status < 500 and status not in (408, 429):
                raise BackendPermanent(f"{where}: {e}") from e
            raise BackendTransient(f"{where}: {e}") from e
        if isinstance(e, sx.DataCorruption | ax.TransportError):
            raise BackendTransient(f"{where}: {e}") from e
        if isinstance(e, requests.RequestException | ConnectionError | TimeoutError | OSError):
            raise BackendTransient(f"{where}: {e}") from e
        return False

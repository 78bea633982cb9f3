"""The `gcs` backend (google-cloud-storage).

The client library honours STORAGE_EMULATOR_HOST (fake-gcs-server); with it
set and no credentials configured, anonymous credentials are used. Not yet
exercised by the test suite: integration tests against fake-gcs-server are the
next increment. The library's own retries are disabled (`retry=None`): the
tier retries transient errors itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .backend import ObjectInfo, check_key
from .errors import AlreadyExists, BackendPermanent, BackendTransient, NotFound


@dataclass(frozen=True, slots=True)
class GcsOptions:
    bucket: str
    prefix: str = ""
    project: str | None = None
    credentials_file: str | None = None  # None: application default credentials
    timeout: float = 60.0


class GcsBackend:
    conditional_create = True  # ifGenerationMatch=0

    def __init__(self, options: GcsOptions, client: Any = None) -> None:
        self.options = options
        self.name = f"gs://{options.bucket}/{options.prefix}"
        self._prefix = options.prefix.strip("/") + "/" if options.prefix.strip("/") else ""
        with _errors(""):
            self._client = client or self._make_client()
            self._bucket = self._client.bucket(options.bucket)

    def _make_client(self) -> Any:
        from google.cloud import storage

        o = self.options
        if o.credentials_file:
            return storage.Client.from_service_account_json(o.credentials_file, project=o.project)
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            return storage.Client(project=o.project or "thur", credentials=AnonymousCredentials())
        return storage.Client(project=o.project)

    def _blob(self, key: str) -> Any:
        return self._bucket.blob(self._prefix + check_key(key))

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        with _errors(key):
            self._blob(key).upload_from_string(
                data,
                content_type="application/octet-stream",
                if_generation_match=0 if if_absent else None,
                timeout=self.options.timeout,
                retry=None,
            )

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            return b""
        end = None if length is None else start + length - 1  # inclusive
        with _errors(key):
            return self._blob(key).download_as_bytes(
                start=start or None, end=end, timeout=self.options.timeout, retry=None
            )

    def head(self, key: str) -> ObjectInfo:
        with _errors(key):
            blob = self._bucket.get_blob(
                self._prefix + check_key(key), timeout=self.options.timeout, retry=None
            )
        if blob is None:
            raise NotFound(key)
        return ObjectInfo(key, int(blob.size))

    def delete(self, key: str) -> None:
        try:
            with _errors(key):
                self._blob(key).delete(timeout=self.options.timeout, retry=None)
        except NotFound:
            pass

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with _errors(prefix):
            for blob in self._client.list_blobs(
                self._bucket, prefix=self._prefix + prefix, timeout=self.options.timeout
            ):
                yield ObjectInfo(blob.name[len(self._prefix) :], int(blob.size))


class _errors:
    def __init__(self, key: str) -> None:
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> bool:
        if e is None or isinstance(e, NotFound | AlreadyExists):
            return False
        from google.api_core import exceptions as gx
        from google.auth import exceptions as ax

        if isinstance(e, gx.NotFound):
            # A missing bucket is a configuration error, not a missing object.
            if "bucket" in str(e).lower() and "object" not in str(e).lower():
                raise BackendPermanent(f"gcs: {e}") from e
            raise NotFound(self.key) from e
        if isinstance(e, gx.PreconditionFailed):
            raise AlreadyExists(self.key) from e
        if isinstance(e, gx.TooManyRequests | gx.ServerError | gx.RequestRangeNotSatisfiable):
            raise BackendTransient(f"gcs: {self.key}: {e}") from e
        if isinstance(e, gx.GoogleAPICallError | ax.DefaultCredentialsError):
            raise BackendPermanent(f"gcs: {self.key}: {e}") from e
        if isinstance(e, ax.TransportError | ConnectionError | TimeoutError | OSError):
            raise BackendTransient(f"gcs: {self.key}: {e}") from e
        import requests

        if isinstance(e, requests.RequestException):
            raise BackendTransient(f"gcs: {self.key}: {e}") from e
        return False

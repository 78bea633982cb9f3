"""The `s3` backend (boto3): AWS S3 and S3-compatible services via endpoint_url.

Tested against SeaweedFS (tests/integration). boto3 is imported lazily so the
daemons do not pay for it when another backend is configured.

botocore's own retries are turned off: the tier retries transient errors
with its policy (1 s → 30 s, 10 attempts), and stacking two retry loops would
multiply the stall.

Error mapping (what the tier retries and what `check` explains):

- NoSuchKey / bare 404 → NotFound; NoSuchBucket → BucketMissing. A HEAD has
  no body, so its 404 cannot say which one is missing: we ask HeadBucket.
- InvalidAccessKeyId, SignatureDoesNotMatch, expired tokens, no credentials
  → CredentialsRejected; AccessDenied and other 403 → PermissionDenied.
- 5xx, 408, 429, throttling codes, connection errors and timeouts →
  BackendTransient; every other client error → BackendPermanent.
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

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidSecurity", "MissingSecurityHeader",
}  # fmt: skip
_TRANSIENT = {
    "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "OperationAborted",
    "ConditionalRequestConflict",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class S3Options:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    access_key_id: str | None = None  # None: boto3's default credential chain
    secret_access_key: str | None = None
    session_token: str | None = None
    max_connections: int = 32
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    list_page_size: int = 1000  # keys per ListObjectsV2 call (the S3 maximum)


class S3Backend:
    conditional_create = True  # PutObject If-None-Match: * (AWS since 2024, SeaweedFS)

    def __init__(self, options: S3Options, client: Any = None) -> None:
        self.options = options
        self._prefix = options.prefix.strip("/") + "/" if options.prefix.strip("/") else ""
        self.name = f"s3://{options.bucket}/{self._prefix}"
        with _errors(self, ""):
            self._client = client or self._make_client()

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        o = self.options
        config = Config(
            region_name=o.region,
            s3={"addressing_style": "path" if o.path_style else "auto"},
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=o.max_connections,
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            # Many S3-compatible servers reject the CRC trailers newer boto3
            # sends by default; our own BLAKE3 verification covers integrity.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=o.access_key_id,
            aws_secret_access_key=o.secret_access_key,
            aws_session_token=o.session_token,
        )
        return session.client("s3", endpoint_url=o.endpoint_url, config=config)

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        with _errors(self, key):
            self._client.put_object(
                Bucket=self.options.bucket, Key=self._key(key), Body=data, **extra
            )

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            return b""
        extra = {}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            extra["Range"] = f"bytes={start}-{end}"
        try:
            with _errors(self, key):
                resp = self._client.get_object(
                    Bucket=self.options.bucket, Key=self._key(key), **extra
                )
                return resp["Body"].read()
        except _RangeNotSatisfiable:
            # Reading at or past the end is a short read, as for a file (the
            # local backend); callers compare lengths and never see garbage.
            return b""

    def head(self, key: str) -> ObjectInfo:
        try:
            with _errors(self, key):
                resp = self._client.head_object(Bucket=self.options.bucket, Key=self._key(key))
        except NotFound:
            # HEAD's 404 has no body: it may be the bucket that is missing.
            # Only that answer replaces NotFound (HeadBucket needs ListBucket,
            # which a reader may lack).
            try:
                with _errors(self, "", bucket=True):
                    self._client.head_bucket(Bucket=self.options.bucket)
            except BucketMissing:
                raise
            except (BackendPermanent, BackendTransient):
                pass
            raise
        return ObjectInfo(key, int(resp["ContentLength"]))

    def delete(self, key: str) -> None:
        with _errors(self, key):
            self._client.delete_object(Bucket=self.options.bucket, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.options.bucket,
            Prefix=self._prefix + prefix,
            PaginationConfig={"PageSize": self.options.list_page_size},
        )
        with _errors(self, prefix):
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"][len(self._prefix) :], int(obj["Size"]))


class _RangeNotSatisfiable(Exception):
    """Internal: a GET whose range starts at or past the end of the object."""


class _errors:
    """Translate botocore exceptions into the backend error types."""

    def __init__(self, backend: S3Backend, key: str, *, bucket: bool = False) -> None:
        self.backend = backend
        self.key = key
        self.bucket = bucket  # a bucket-level call: its bare 404 means no bucket

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> bool:
        if e is None:
            return False
        from botocore import exceptions as bx

        o = self.backend.options
        where = f"s3: {self.backend.name}{self.key}"
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            detail = f"{code} {err.get('Message', '')}".strip()
            if code in _NO_BUCKET or (status == 404 and self.bucket):
                raise BucketMissing(
                    f"s3: bucket {o.bucket!r} does not exist at "
                    f"{o.endpoint_url or 'AWS'} ({detail})"
                ) from e
            if code in _NOT_FOUND or status == 404:
                raise NotFound(self.key) from e
            if code == "InvalidRange" or status == 416:
                raise _RangeNotSatisfiable() from e
            if code == "PreconditionFailed" or status == 412:
                raise AlreadyExists(self.key) from e
            if code in _TRANSIENT or status >= 500 or status in (408, 429):
                raise BackendTransient(f"{where}: {detail}") from e
            if code in _BAD_CREDENTIALS:
                raise CredentialsRejected(
                    f"s3: credentials rejected by {o.endpoint_url or 'AWS'} "
                    f"(access key {o.access_key_id or 'from the default chain'}): {detail}"
                ) from e
            if status == 403:
                raise PermissionDenied(f"{where}: {detail}") from e
            raise BackendPermanent(f"{where}: {detail}") from e
        if isinstance(e, bx.NoCredentialsError | bx.PartialCredentialsError):
            raise CredentialsRejected(f"s3: no usable credentials: {e}") from e
        if isinstance(e, bx.ParamValidationError):
            raise BackendPermanent(f"{where}: {e}") from e
        if isinstance(e, bx.BotoCoreError | OSError):  # connection errors, timeouts
            raise BackendTransient(f"{where}: {e}") from e
        return False

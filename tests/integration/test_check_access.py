"""`check` and the typed permanent errors against servers that really check access.

SeaweedFS is started with identities (admin, reader, a write-only "blind"
key); Azurite checks its shared key and SAS tokens, whose permissions
(r/w/d/l) can be withheld one at a time. fake-gcs-server checks no
credentials at all, so GCS appears here only where the server can answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from thur.cloud import (
    Backend,
    CredentialsRejected,
    PermissionDenied,
    RetryPolicy,
    check,
)

from .servers import AZURITE_ACCOUNT, AZURITE_KEY, Azurite, SeaweedFS

WRONG_AZURE_KEY = "A" * 86 + "=="  # well-formed base64, not the account's key


def steps(backend: Backend) -> list[tuple[str, bool, str]]:
    report = check(backend)
    return [(s.name, s.ok, s.message) for s in report.steps]


def assert_no_retry(op: object) -> None:
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        op()  # type: ignore[operator]

    with pytest.raises((CredentialsRejected, PermissionDenied)):
        RetryPolicy().call(attempt, lambda s: pytest.fail(f"slept {s} s before a retry"))
    assert len(calls) == 1


# ---- S3 (SeaweedFS identities) ---------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"secret_access_key": "not-the-secret"}, id="wrong-secret"),
        pytest.param({"access_key_id": "nobody", "secret_access_key": "x"}, id="unknown-key"),
    ],
)
def test_s3_bad_credentials(s3_server: SeaweedFS, overrides: dict[str, str]) -> None:
    be = s3_server.backend(prefix="t/creds", **overrides)
    for op in (lambda: list(be.list("")), lambda: be.put("k", b"v"), lambda: be.get("k")):
        with pytest.raises(CredentialsRejected, match="credentials rejected"):
            op()
    assert_no_retry(lambda: be.put("k", b"v"))
    (name, ok, message), *rest = steps(be)
    assert (name, ok, rest) == ("list", False, [])
    assert message.startswith("credentials rejected: check the key")
    assert s3_server.endpoint in message


def test_s3_read_only_key_cannot_write(s3_server: SeaweedFS) -> None:
    be = s3_server.backend(identity="reader", prefix="t/reader")
    with pytest.raises(PermissionDenied):
        be.put("k", b"v")
    assert_no_retry(lambda: be.put("k", b"v"))
    result = steps(be)
    assert [(n, ok) for n, ok, _ in result] == [("list", True), ("write", False)]
    assert result[1][2].startswith("permission denied: these credentials may not write objects to")


def test_s3_write_only_key_cannot_read(s3_server: SeaweedFS) -> None:
    be = s3_server.backend(identity="blind", prefix="t/blind")
    result = steps(be)
    assert [(n, ok) for n, ok, _ in result][:3] == [
        ("list", True),
        ("write", True),
        ("read", False),
    ]
    assert result[2][2].startswith("permission denied: these credentials may not read objects from")
    # The probe is still removed: delete needs only Write on SeaweedFS.
    assert list(s3_server.backend(prefix="t/blind").list("check/")) == []


# ---- Azure (Azurite shared key and SAS) ------------------------------------


def test_azure_wrong_account_key(azure_server: Azurite) -> None:
    be = azure_server.backend(
        prefix="t/creds", connection_string=azure_server.connection_string(WRONG_AZURE_KEY)
    )
    for op in (lambda: list(be.list("")), lambda: be.put("k", b"v"), lambda: be.get("k")):
        with pytest.raises(CredentialsRejected, match="credentials rejected"):
            op()
    assert_no_retry(lambda: be.put("k", b"v"))
    (name, ok, message), *rest = steps(be)
    assert (name, ok, rest) == ("list", False, [])
    assert message.startswith("credentials rejected: check the key")


def sas(azure: Azurite, permission: str) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(
        AZURITE_ACCOUNT,
        azure.container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions.from_string(permission),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


def sas_backend(azure: Azurite, token: str, prefix: str) -> Backend:
    return azure.backend(
        prefix=prefix, connection_string=None, account_url=azure.account_url, credential=token
    )


def test_azure_full_sas_passes_check(azure_server: Azurite) -> None:
    be = sas_backend(azure_server, sas(azure_server, "rwdl"), "t/full-sas")
    assert all(ok for _, ok, _ in steps(be))


@pytest.mark.parametrize(
    ("permission", "failing_step", "verb"),
    [
        ("rwd", "list", "list objects in"),
        ("rdl", "write", "write objects to"),
        ("wdl", "read", "read objects from"),
        ("rwl", "delete", "delete objects from"),
    ],
)
def test_azure_sas_missing_one_permission(
    azure_server: Azurite, permission: str, failing_step: str, verb: str
) -> None:
    be = sas_backend(azure_server, sas(azure_server, permission), f"t/sas-{permission}")
    result = {n: (ok, msg) for n, ok, msg in steps(be)}
    ok, message = result[failing_step]
    assert not ok
    assert message.startswith(f"permission denied: these credentials may not {verb}"), message
    assert all(ok for n, (ok, _) in result.items() if n != failing_step), result
    # Leave no probe behind for the other tests' listings.
    for info in azure_server.backend(prefix=f"t/sas-{permission}").list("check/"):
        azure_server.backend(prefix=f"t/sas-{permission}").delete(info.key)


def test_azure_forged_sas_is_rejected(azure_server: Azurite) -> None:
    token = sas(azure_server, "rwdl")
    forged = token.replace("sig=", "sig=AAAA", 1)
    be = sas_backend(azure_server, forged, "t/forged")
    with pytest.raises(CredentialsRejected):
        list(be.list(""))


def test_s3_and_azure_accept_the_right_credentials(
    s3_server: SeaweedFS, azure_server: Azurite
) -> None:
    for be in (s3_server.backend(prefix="t/ok"), azure_server.backend(prefix="t/ok")):
        assert check(be).ok


# ---- what the client itself can tell ---------------------------------------


def test_gcs_unusable_credentials_file(tmp_path: Path) -> None:
    # fake-gcs-server accepts any credentials, so only the client side is testable.
    from thur.cloud import open_backend

    bad = tmp_path / "key.json"
    bad.write_text('{"type": "service_account"}')
    for path in (tmp_path / "missing.json", bad):
        with pytest.raises(CredentialsRejected, match="credentials file"):
            open_backend("gcs", {"bucket": "b", "credentials_file": str(path)})


def test_s3_without_any_credentials(
    s3_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    be = s3_server.backend(prefix="t/nocreds", access_key_id=None, secret_access_key=None)
    with pytest.raises(CredentialsRejected, match="no usable credentials"):
        list(be.list(""))
    assert steps(be)[0][2].startswith("credentials rejected")

"""`check`: can this backend be used? A write/read/delete probe.

Each step gets a clear message; the daemons refuse to start when any fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from .backend import Backend
from .errors import (
    BackendError,
    BackendPermanent,
    BackendTransient,
    BucketMissing,
    CredentialsRejected,
    NotFound,
    PermissionDenied,
)

PROBE_PREFIX = "check/"


@dataclass(frozen=True, slots=True)
class CheckStep:
    name: str
    ok: bool
    message: str


@dataclass(slots=True)
class CheckReport:
    backend: str
    steps: list[CheckStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def __str__(self) -> str:
        lines = [f"backend {self.backend}: {'OK' if self.ok else 'FAILED'}"]
        lines += [f"  [{'ok' if s.ok else 'FAIL'}] {s.name}: {s.message}" for s in self.steps]
        return "\n".join(lines)


_VERB = {
    "list": "list objects in",
    "write": "write objects to",
    "read": "read objects from",
    "delete": "delete objects from",
}


def _explain(e: BaseException, step: str, where: str) -> str:
    # The typed permanent errors each point at a different fix: the key, the
    # bucket's name, or the policy attached to the key.
    if isinstance(e, CredentialsRejected):
        return f"credentials rejected: check the key / secret / token configured ({e})"
    if isinstance(e, BucketMissing):
        return f"bucket missing: create it, or fix its name in the configuration ({e})"
    if isinstance(e, PermissionDenied):
        verb = _VERB.get(step, step)
        return f"permission denied: these credentials may not {verb} {where} ({e})"
    if isinstance(e, BackendPermanent):
        return f"permanent error (credentials, permissions or missing bucket?): {e}"
    if isinstance(e, BackendTransient):
        return f"service unreachable or failing (network, endpoint, outage?): {e}"
    if isinstance(e, NotFound):
        return f"object vanished right after being written (eventual consistency?): {e}"
    return f"{type(e).__name__}: {e}"


def check(backend: Backend, *, token: Callable[[], str] | None = None) -> CheckReport:
    """Probe list, write, read (whole and ranged), delete, and absence after delete."""
    report = CheckReport(backend.name)
    key = f"{PROBE_PREFIX}{(token or (lambda: os.urandom(8).hex()))()}"
    body = b"thur backend check " + key.encode()

    def step(name: str, fn: Callable[[], str]) -> bool:
        try:
            report.steps.append(CheckStep(name, True, fn()))
            return True
        except (BackendError, OSError, ValueError) as e:
            report.steps.append(CheckStep(name, False, _explain(e, name, backend.name)))
            return False

    def do_list() -> str:
        n = sum(1 for _ in backend.list(PROBE_PREFIX))
        return f"listing works (credentials and bucket OK); {n} stale probe object(s)"

    def do_put() -> str:
        backend.put(key, body)
        return f"wrote {key}"

    def do_get() -> str:
        got = backend.get(key)
        if got != body:
            raise ValueError(f"read back {len(got)} bytes that differ from what was written")
        part = backend.get(key, 6, 5)
        if part != body[6:11]:
            raise ValueError(f"ranged read returned {part!r}, expected {body[6:11]!r}")
        return "read back identical bytes (whole and ranged)"

    def do_delete() -> str:
        backend.delete(key)
        try:
            backend.head(key)
        except NotFound:
            return "deleted, and the object is gone"
        except PermissionDenied:
            # The delete itself worked; the missing read right is the read
            # step's failure, not this one's.
            return "deleted (not confirmed: these credentials may not read)"
        raise ValueError("object still present after delete")

    if step("list", do_list) and step("write", do_put):
        step("read", do_get)
        step("delete", do_delete)
    return report

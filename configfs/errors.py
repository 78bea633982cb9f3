"""Typed errors of the configfs package (callers catch these, never OSError)."""

from __future__ import annotations


class ConfigfsError(Exception):
    """Base of every error this package raises on purpose."""


class StateError(ConfigfsError, ValueError):
    """The desired state is invalid; the message names the field and the rule."""


class ConflictError(ConfigfsError):
    """Objects we would create already exist and were not created by us.

    We never adopt foreign objects: adopting one would make our teardown delete
    something another user of this host relies on.
    """

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        listing = "\n  ".join(paths)
        super().__init__(
            "these kernel objects already exist but are not in our ledger (another tool or "
            f"user created them); remove them or change our configuration:\n  {listing}"
        )


class DbRootError(ConfigfsError):
    """LIO's db_root cannot be pointed at our directory."""


class LedgerError(ConfigfsError):
    """The ledger file is unreadable or of an unknown version."""


class ExecutionError(ConfigfsError):
    """A kernel write failed while applying or tearing down; says which object and why."""


class TeardownError(ConfigfsError):
    """Some ledger objects could not be removed; they stay in the ledger for a retry."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        listing = "\n  ".join(failures)
        super().__init__(f"teardown left {len(failures)} object(s) in place:\n  {listing}")


class PrerequisiteError(ConfigfsError):
    """The host cannot run LIO/TCMU; `problems` are actionable, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("host prerequisites missing:\n  " + "\n  ".join(problems))


class BackstoreNotFound(ConfigfsError, LookupError):
    """No (or more than one) user backstore matches what the caller asked to reattach."""

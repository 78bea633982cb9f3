"""Retries with capped exponential backoff, for transient backend errors only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import BackendTransient

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delays 1, 2, 4, … s capped at 30 s; `attempts` calls in total.

    Only BackendTransient is retried: permanent errors (auth, missing bucket)
    and NotFound surface at once.
    """

    attempts: int = 10
    initial: float = 1.0
    cap: float = 30.0
    multiplier: float = 2.0

    def delays(self) -> list[float]:
        """The sleeps between attempts (attempts - 1 of them)."""
        return [min(self.cap, self.initial * self.multiplier**i) for i in range(self.attempts - 1)]

    def call(self, fn: Callable[[], T], sleep: Callable[[float], None], what: str = "") -> T:
        delays = self.delays()
        for attempt in range(self.attempts):
            try:
                return fn()
            except BackendTransient as e:
                if attempt == len(delays):
                    raise
                log.warning(
                    "%s: transient failure (%s), retry %d in %.0f s",
                    what or "backend call",
                    e,
                    attempt + 1,
                    delays[attempt],
                )
                sleep(delays[attempt])
        raise AssertionError("unreachable")

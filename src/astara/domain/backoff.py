"""Backoff and failure records: when to retry a failing resource, and when it is ERROR.

What it owns: ``Backoff``, the capped exponential delay with bounded jitter
for the n-th consecutive failure, and ``FailureRecord``, the count of one
resource's consecutive failures with the last reason. The reconciler keeps
one record per resource: it calls ``failed`` when an action raises a
temporary error or ``decide`` returns a ``failure`` decision, ``succeeded``
when the resource reaches ACTIVE (or GONE), and requeues the resource after
``retry_delay``. Pure: the random source is injected, there is no clock.

Invariants:

- ``Backoff.nominal(n)`` is non-decreasing in ``n`` and never above ``cap``.
- ``Backoff.delay(n)`` lies in ``[nominal(n) * (1 - jitter), nominal(n)]``:
  jitter only shortens, so the cap holds with jitter too, and resources
  failing together spread out instead of retrying in lockstep.
- A record with failures always has a retry delay: reaching
  ``max_failures`` makes it ERROR (``in_error``), it never stops retrying.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay ``base * factor**(n-1)`` seconds for attempt ``n``, capped, minus jitter.

    ``rng`` is any ``random.Random``; inject a seeded one to make delays
    reproducible.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.base <= 0:
            raise ValueError(f"base must be positive, not {self.base}")
        if self.cap < self.base:
            raise ValueError(f"cap {self.cap} is below base {self.base}")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1, not {self.factor}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {self.jitter}")

    def nominal(self, attempt: int) -> float:
        """The delay before jitter for consecutive failure number ``attempt`` (from 1)."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, not {attempt}")
        delay = self.base
        # Multiplying step by step (not factor ** n) cannot overflow: it stops
        # at the cap, which a factor above 1 reaches in a few dozen steps.
        for _ in range(attempt - 1):
            if delay >= self.cap or self.factor == 1:
                break
            delay *= self.factor
        return min(delay, self.cap)

    def delay(self, attempt: int) -> float:
        """The delay for ``attempt``: ``nominal`` shortened by up to ``jitter`` of itself."""
        nominal = self.nominal(attempt)
        return nominal * (1 - self.jitter * self.rng.random())


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """One resource's consecutive failures and the last reason; replaced, never mutated."""

    max_failures: int = 5
    failures: int = 0
    reason: str = ""

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, not {self.max_failures}")
        if self.failures < 0:
            raise ValueError(f"failures cannot be negative: {self.failures}")

    def failed(self, reason: str) -> FailureRecord:
        """This record after one more consecutive failure, for ``reason``."""
        return replace(self, failures=self.failures + 1, reason=reason)

    def succeeded(self) -> FailureRecord:
        """This record after a success: no failures, no reason."""
        return replace(self, failures=0, reason="")

    @property
    def in_error(self) -> bool:
        """Whether the resource is ERROR: ``max_failures`` consecutive failures or more."""
        return self.failures >= self.max_failures

    def retry_delay(self, backoff: Backoff) -> float | None:
        """Seconds until the next attempt, or ``None`` when nothing has failed.

        In ERROR too: ERROR changes what the network API shows, not whether
        the resource is retried.
        """
        if self.failures == 0:
            return None
        return backoff.delay(self.failures)

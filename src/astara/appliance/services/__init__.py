"""One module per Linux subsystem the appliance drives; each applies a plan idempotently.

Every service has the same three steps, driven by ``astara.appliance.router``:
``check(plan)`` validates what it would write with the daemon's own checker and
touches nothing; ``apply(plan)`` makes it live and returns whether anything
changed (the same plan twice changes nothing); ``stop()`` removes everything it
made for the appliance. The ``Service`` protocol names that contract.
"""

from __future__ import annotations

from typing import Protocol

from astara.appliance.plan import RouterPlan


class Service(Protocol):
    async def check(self, plan: RouterPlan) -> None:
        """Raise ApplyError if ``plan`` cannot be realised; change nothing."""

    async def apply(self, plan: RouterPlan) -> bool:
        """Make ``plan`` live; idempotent; True if anything changed."""

    async def stop(self) -> None:
        """Remove what this service made; idempotent."""

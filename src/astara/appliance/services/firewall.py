"""The router's firewall and NAT: the nftables table ``inet astara`` in one namespace.

Owns, and touches nothing else: the table ``inet astara`` in ``netns`` (other
tables in the namespace are left alone), and in ``state_dir`` the file
``ruleset.nft`` (the text last loaded). nft runs in-process through
libnftables (``system/nftables.py``). Driven by the appliance's apply
sequence through the ``Service`` protocol; ``listing`` serves
``GET /v1/firewall/rules/``.

Invariants:
- every load is one transaction: an ``nft -f`` text that replaces the whole
  table or, when only floating IPs changed, one nfnetlink batch of element
  changes to the floating maps (``system/nfnetlink.py``; a libnftables element
  delete costs ~15 ms, the batch ~0.1 ms). The kernel holds either the
  previous ruleset or the new one, never a mix; a rejected load leaves the
  previous one in force;
- ``ruleset.nft`` is written only after nft accepted its text, so it is always
  what the kernel holds while the namespace lives. ``apply`` trusts it: the
  same plan twice runs nft once. Whoever recreates the namespace calls
  ``stop()`` first, so that the next ``apply`` loads again.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from astara.appliance.errors import ApplyError, CommandError
from astara.appliance.plan import RouterPlan
from astara.appliance.render.nftables import (
    TABLE,
    TABLE_NAME,
    MapElementChange,
    element_changes,
    render_ruleset,
)
from astara.appliance.system.files import read_text, write_atomic
from astara.appliance.system.netns import Netns
from astara.appliance.system.nfnetlink import NFPROTO_INET, ElementChange, SetElements
from astara.appliance.system.nftables import run_nft

STEP = "firewall"
_DROP_TABLE = f"table {TABLE} {{}}\ndelete table {TABLE}\n"  # works whether or not it exists


class Firewall:
    """Loads, lists and removes the appliance's nftables table; see the module docstring."""

    def __init__(
        self,
        *,
        netns: Netns,
        state_dir: Path,
        api_port: int = 5000,
        metadata_port: int = 9602,
    ) -> None:
        self._netns = netns
        self._state_dir = state_dir
        self._api_port = api_port
        self._metadata_port = metadata_port
        self._rendered: tuple[RouterPlan, str] | None = None
        self._updates: tuple[tuple[str, str], list[MapElementChange] | None] | None = None
        self._elements = SetElements(netns)

    async def check(self, plan: RouterPlan) -> None:
        """Have nft validate the ruleset for ``plan`` without loading it.

        Changes nothing in the kernel. Raises ApplyError with nft's message if
        the text is rejected.
        """
        text = self._render(plan)
        loaded = read_text(self._active)
        if loaded is not None and self._update(loaded, text) is not None:
            return  # only map elements change: the loading transaction is all-or-nothing
        if loaded != text:  # the loaded text was checked when it was loaded
            await self._check_text(text)

    async def apply(self, plan: RouterPlan) -> bool:
        """Load the ruleset for ``plan`` in one transaction; False if it is already loaded.

        Idempotent. Raises ApplyError with nft's message if nft rejects the
        text; the previous ruleset then stays in force.
        """
        text = self._render(plan)
        loaded = read_text(self._active)
        if loaded == text:
            return False
        update = None if loaded is None else self._update(loaded, text)
        if update is not None:
            self._write_elements(update)
        else:
            await self._nft(text)
        write_atomic(self._active, text)  # the whole ruleset now in force
        return True

    async def listing(self) -> str:
        """The table as the kernel holds it (``nft list table``), or "" if it is absent.

        Raises CommandError if nft fails in the namespace.
        """
        if not self._netns.exists():
            return ""
        tables = await run_nft(self._netns, "list tables inet")
        if f"table {TABLE}" not in tables.splitlines():
            return ""
        return await run_nft(self._netns, f"list table {TABLE}")

    async def stop(self) -> None:
        """Delete the table if present and forget the loaded text. Idempotent.

        Raises ApplyError if nft fails on a namespace that exists.
        """
        self.close()
        if self._netns.exists():
            await self._nft(_DROP_TABLE)
        self._active.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the netlink socket kept for element updates (the table stays)."""
        self._elements.close()

    @property
    def _active(self) -> Path:
        return self._state_dir / "ruleset.nft"

    def _render(self, plan: RouterPlan) -> str:
        # check() and apply() see the same plan object in one push: render it once
        if self._rendered is None or self._rendered[0] is not plan:
            text = render_ruleset(plan, api_port=self._api_port, metadata_port=self._metadata_port)
            self._rendered = (plan, text)
        return self._rendered[1]

    def _update(self, loaded: str, text: str) -> list[MapElementChange] | None:
        """The element changes from ``loaded`` to ``text`` (None: reload); once per push."""
        if self._updates is None or self._updates[0] != (loaded, text):
            self._updates = ((loaded, text), element_changes(loaded, text))
        return self._updates[1]

    def _write_elements(self, changes: list[MapElementChange]) -> None:
        """One transaction over netlink; the floating maps hold IPv4 addresses only."""
        encoded = [
            ElementChange(
                c.name,
                ipaddress.IPv4Address(c.key).packed,
                None if c.value is None else ipaddress.IPv4Address(c.value).packed,
            )
            for c in changes
        ]
        try:
            self._elements.update(encoded, table=TABLE_NAME, family=NFPROTO_INET)
        except CommandError as exc:
            detail = "; ".join(str(c) for c in changes)
            raise ApplyError(STEP, f"{exc.output} in: {detail}") from exc

    async def _check_text(self, text: str) -> None:
        await self._nft(text, dry_run=True)

    async def _nft(self, commands: str, *, dry_run: bool = False) -> None:
        try:
            await run_nft(self._netns, commands, dry_run=dry_run)
        except CommandError as exc:
            raise ApplyError(STEP, exc.output.strip() or str(exc)) from exc

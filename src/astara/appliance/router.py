"""One appliance: its namespace, its applied configuration, and the services that realise it.

``Router.push`` is the transaction behind ``PUT /v1/system/config/``:

1. plan    -- validate the body against itself and the kernel's NICs (ConfigError, 422);
2. check   -- the daemons check what they would load (``dnsmasq --test``, ``bird -p``,
              the metadata proxy), all at once; a refusal is a ConfigError too;
              nothing has been touched;
3. apply   -- firewall first (one atomic nft transaction: a refusal leaves the kernel
              as it was, so it is a ConfigError with nothing touched, and no separate
              ``nft -c`` is run), then links and addresses, conntrack flush of removed
              addresses, dnsmasq, bird, metadata proxy;
4. commit  -- remember the config (in memory and in ``state_dir/config.json``).

If step 3 fails after the firewall was loaded, the previous plan is applied
again (or, for a first push, everything is stopped) and ApplyError is raised:
the previous configuration keeps running.

Why the firewall goes first and is not checked apart: on this kernel every nft
transaction that removes anything (a dry run's abort included) waits for an RCU
grace period, ~8-16 ms, so a check then a load cost two; its rules name
interfaces (``iifname``), so loading them before the links exist is harmless.
This is the path from a change to traffic (bench P1). Pushes are serialised per appliance; the same config twice
changes nothing and restarts nothing, because every service converges by diff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from astara.appliance.document import ConfigDocument
from astara.appliance.errors import ApplianceError, ApplyError, ConfigError
from astara.appliance.plan import IPAddress, RouterPlan, build_plan
from astara.appliance.services import Service
from astara.appliance.services.bird import Bird
from astara.appliance.services.conntrack import flush_addresses
from astara.appliance.services.dnsmasq import Dnsmasq
from astara.appliance.services.firewall import Firewall
from astara.appliance.services.metadata import MetadataProxy
from astara.appliance.services.netlink import Links
from astara.appliance.system.files import write_atomic
from astara.appliance.system.icmp import Pinger
from astara.appliance.system.netns import Netns
from astara.wire.appliance_v1 import ConfigurationBody, InterfaceState, Status

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
#: seconds a gateway has to answer the status probe's echo request
GATEWAY_TIMEOUT = 1.0


class Router:
    """The agent's view of one appliance."""

    def __init__(
        self,
        *,
        netns: Netns,
        state_dir: Path,
        api_port: int = 5000,
        metadata_port: int = 9602,
    ) -> None:
        self.netns = netns
        self.state_dir = state_dir
        self.links = Links(netns=netns)
        self.pinger = Pinger(netns)
        self.firewall = Firewall(
            netns=netns, state_dir=state_dir, api_port=api_port, metadata_port=metadata_port
        )
        self.dnsmasq = Dnsmasq(netns=netns, state_dir=state_dir)
        self.bird = Bird(netns=netns, state_dir=state_dir)
        self.metadata = MetadataProxy(netns=netns, port=metadata_port)
        self.protected: set[IPAddress] = set()
        self.config: ConfigurationBody | None = None
        self.config_json: str | None = None  # ``config`` as served by GET, rendered once
        self.plan: RouterPlan | None = None
        self._document: Any = None
        self._writer = ConfigDocument()
        self._lock = asyncio.Lock()

    @property
    def daemons(self) -> tuple[Service, ...]:
        """The services besides the links, in the order they are applied (the firewall,
        then the links, then the others: see the module docstring)."""
        return (self.firewall, self.dnsmasq, self.bird, self.metadata)

    # -- the transaction ----------------------------------------------------------
    @property
    def applied_document(self) -> tuple[Any, ConfigurationBody] | None:
        """The JSON document last applied and its model, for incremental parsing."""
        if self._document is None or self.config is None:
            return None
        return self._document, self.config

    async def push(self, body: ConfigurationBody, *, document: Any = None) -> ConfigurationBody:
        """Validate, check, apply and commit ``body`` (parsed from ``document``, if given).

        See the module docstring.
        """
        async with self._lock:
            started = time.monotonic()
            previous = (self.config.configuration, self.plan) if self.config and self.plan else None
            plan = build_plan(body.configuration, await self.links.links(), previous=previous)
            _check_api_reachable(plan, self.protected)
            await self._check(plan)
            text = self._writer.dump(body)
            try:
                firewall_changed = await self.firewall.apply(plan)
            except ApplyError as exc:  # one transaction: the kernel holds the previous ruleset
                raise _refused(exc) from exc
            try:
                changed = await self._apply(
                    plan, previous=self.plan, then=self._saver(text), firewall=False
                )
                changed = changed or firewall_changed
            except (ApplianceError, OSError) as exc:
                await self._restore(failed=plan)
                if isinstance(exc, ApplyError):
                    raise
                raise ApplyError(type(exc).__name__, str(exc)) from exc
            self.plan, self.config, self.config_json = plan, body, text
            self._document = document
            log.info(
                "%s: applied (%s) in %.0f ms",
                self.netns.label,
                "changed" if changed else "no change",
                (time.monotonic() - started) * 1000,
            )
            return body

    async def _check(self, plan: RouterPlan) -> None:
        """Every daemon but the firewall (see the module docstring) checks ``plan``, at once."""
        checks = [s.check(plan) for s in self.daemons if s is not self.firewall]
        results = await asyncio.gather(*checks, return_exceptions=True)
        for result in results:  # the first refusal in apply order is the one reported
            if isinstance(result, ApplyError):
                raise _refused(result) from result
            if isinstance(result, BaseException):
                raise result

    async def _apply(
        self,
        plan: RouterPlan,
        *,
        previous: RouterPlan | None,
        then: Callable[[], Awaitable[None]] | None = None,
        firewall: bool = True,
    ) -> bool:
        """Converge on ``plan``; ``previous`` is what the kernel is believed to hold.

        The firewall first (unless ``firewall`` is False: the caller loaded it), then
        links; ``then`` runs once every service applied, while stale flows are flushed.
        """
        changed = await self.firewall.apply(plan) if firewall else False
        change = await self.links.apply(plan, protected=self.protected, previous=previous)
        changed = change.changed or changed
        # stale flows of removed addresses go while the other daemons converge
        flush = asyncio.create_task(flush_addresses(self.netns, change.removed))
        try:
            for service in self.daemons[1:]:
                changed = await service.apply(plan) or changed
            if then is not None:
                await then()
        finally:
            await flush
        return changed

    def _saver(self, text: str) -> Callable[[], Awaitable[None]]:
        async def save() -> None:
            await asyncio.to_thread(write_atomic, self.state_dir / CONFIG_FILE, text, 0o600)

        return save

    async def _restore(self, *, failed: RouterPlan) -> None:
        """Put the previous plan back after ``failed`` was partly applied; best effort, logged."""
        try:
            if self.plan is not None:
                # undo what the failed plan may have done, then repair against the kernel
                await self._apply(self.plan, previous=failed)
                await self._apply(self.plan, previous=None)
            else:
                await self._stop_services()
                # and take back the addresses and routes the failed first plan gave
                nothing = dataclasses.replace(
                    failed,
                    networks=(),
                    routes=(),
                    floating_ips=(),
                    default_v4_gateway=None,
                    default_v6_gateway=None,
                )
                await self.links.apply(nothing, protected=self.protected, previous=failed)
        except (ApplianceError, OSError):
            log.exception("%s: restoring the previous configuration failed", self.netns.label)

    # -- start and stop -----------------------------------------------------------
    async def resume(self) -> None:
        """Re-apply the configuration saved by an earlier agent (adopting its daemons)."""
        path = self.state_dir / CONFIG_FILE
        if not path.exists():
            return
        try:
            body = ConfigurationBody.model_validate(json.loads(path.read_text()))
            await self.push(body)
        except (ValueError, ValidationError, ApplianceError) as exc:
            log.error("%s: could not resume the saved configuration: %s", self.netns.label, exc)

    async def _stop_services(self) -> None:
        for service in reversed(self.daemons):
            try:
                await service.stop()
            except (ApplianceError, OSError) as exc:
                log.warning("%s: stopping %s: %s", self.netns.label, type(service).__name__, exc)

    async def close(self, *, stop_services: bool) -> None:
        """Release the agent's resources; with ``stop_services`` also daemons, rules and state."""
        async with self._lock:
            if stop_services:
                await self._stop_services()
            else:
                await self.metadata.stop()  # in-process listeners die with the agent anyway
            self.links.close()
            self.pinger.close()
            self.firewall.close()
            if stop_services:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- reading ------------------------------------------------------------------
    async def interfaces(self) -> list[InterfaceState]:
        return await self.links.interfaces()

    async def interface(self, ifname: str) -> InterfaceState:
        return await self.links.interface(ifname)

    async def firewall_rules(self) -> str:
        return await self.firewall.listing()

    async def status(self) -> Status:
        """v4/v6: the default gateway of that family answers.

        One echo request from the namespace (in-process, no ``ping`` process);
        unanswered, the neighbour table decides, so a gateway that drops echo
        requests but answers ARP or neighbour solicitations counts as alive.
        """
        plan = self.plan
        if plan is None:
            return Status(v4=False, v6=False)
        external = plan.external
        ifindex = self.links.index(external.ifname) if external is not None else None
        return Status(
            v4=await self._gateway_ok(plan.default_v4_gateway, ifindex),
            v6=await self._gateway_ok(plan.default_v6_gateway, ifindex),
        )

    async def _gateway_ok(self, gateway: IPAddress | None, ifindex: int | None) -> bool:
        if gateway is None:
            return False
        try:
            if await self.pinger.echo(gateway, timeout=GATEWAY_TIMEOUT, ifindex=ifindex):
                return True
        except (OSError, ApplianceError) as exc:  # no raw socket, or the namespace is gone
            log.warning("%s: echo to %s: %s", self.netns.label, gateway, exc)
        return bool(await self.links.gateway_alive(gateway))


def _refused(exc: ApplyError) -> ConfigError:
    """A daemon's refusal of a plan, before anything was changed: the client's error."""
    return ConfigError("configuration", f"{exc.step} refused it: {exc.reason}")


def _check_api_reachable(plan: RouterPlan, api: set[IPAddress]) -> None:
    """The firewall admits the API only on the management NIC: it must carry the API's address.

    Otherwise the push would succeed and lock every later request out, for good,
    since a restarted agent re-applies the saved configuration.
    """
    carried = {a.ip for a in plan.management.addresses} if plan.management else set()
    if api and not api & carried:
        listen = ", ".join(sorted(str(a) for a in api))
        raise ConfigError(
            "networks",
            f"no management network carries the API address {listen}; "
            "this configuration would lock the API out",
        )

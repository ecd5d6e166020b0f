"""The instance provider interface: boot, inspect, replug and delete one appliance per router.

A provider makes *service instances*: one per router, with a management NIC
``ge0`` the orchestrator reaches the appliance API through, and one NIC per
router port (``ge1``...), each with the port's MAC so the appliance matches
it. ``netns`` (``astara.providers.netns``) makes Linux network namespaces on
this host; ``fake`` (``astara.providers.fake``) keeps instances in memory for
unit tests; ``nova`` (later) boots VMs. All of them answer to ``Provider``.

Errors say what the caller does next::

    ProviderError
    ├── ProviderTemporaryError    the kernel, the agent or the cloud failed for now
    │                             (agent not running, netlink busy): retry after a delay
    └── ProviderPermanentError    retrying the same request does not help: mark the
        │                         resource ERROR with the message as the reason
        ├── ProviderNotFoundError  the instance to plug into does not exist: boot it first
        └── ProviderConflictError  a name or address the instance needs is held by
                                   another router (see the message); re-read, then decide
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv6Address
from typing import Protocol, runtime_checkable


class ProviderError(Exception):
    """Base of every error a provider raises on purpose."""


class ProviderTemporaryError(ProviderError):
    """The request failed for now; the same request may succeed after a delay."""


class ProviderPermanentError(ProviderError):
    """The request cannot succeed as it is (a bad value, an id clash)."""


class ProviderNotFoundError(ProviderPermanentError):
    """The router has no instance (plug before boot)."""


class ProviderConflictError(ProviderPermanentError):
    """A name or address the instance needs is held by another router."""


@dataclass(frozen=True)
class PortSpec:
    """One router port as the instance must carry it: a NIC with ``mac`` and ``mtu``.

    ``network_type`` and ``segmentation_id`` are Neutron's ``provider:*``
    values (``flat``, ``vlan``, ``vxlan``, ``local``); ``physical_network``
    is needed by flat and VLAN networks only.
    """

    port_id: str
    network_id: str
    network_type: str
    segmentation_id: int | None
    mac: str
    mtu: int = 1500
    physical_network: str | None = None


@dataclass(frozen=True)
class Nic:
    """One port NIC of an instance as observed: ``ifname`` (``ge1``...), its MAC and port."""

    ifname: str
    mac: str
    port_id: str | None = None


@dataclass(frozen=True)
class Instance:
    """A router's service instance as observed (read back, never remembered).

    ``name`` is the provider's name for it (the namespace, the VM name);
    ``management_address`` is where its appliance API listens (port 5000);
    ``nics`` are the port NICs (not ``ge0``), sorted by name;
    ``management_mac`` is ``ge0``'s MAC when the provider read it with the rest
    (None: not known; the orchestrator reads it itself).
    """

    router_id: str
    name: str
    management_address: IPv6Address | None
    booted_at: datetime | None
    nics: tuple[Nic, ...] = field(default=())
    management_mac: str | None = None

    @property
    def macs(self) -> frozenset[str]:
        """The MACs of the port NICs (lower case)."""
        return frozenset(nic.mac for nic in self.nics)

    def nic_of(self, port_id: str) -> Nic | None:
        """The NIC carrying ``port_id``, None if it is not plugged."""
        return next((nic for nic in self.nics if nic.port_id == port_id), None)


@runtime_checkable
class Provider(Protocol):
    """Where service instances come from. One instance per router id.

    Every method may raise ``ProviderTemporaryError`` (retry later) and
    ``ProviderPermanentError`` (give up with the reason); the ones below say
    which narrower errors they raise and what is idempotent.
    """

    async def boot(self, *, router_id: str, ports: Sequence[PortSpec]) -> Instance:
        """Make the router's instance with ``ge0`` and one NIC per port; register it; return it.

        Idempotent: an existing instance is adopted and converged (missing
        ports plugged, nothing rebooted; ports not in ``ports`` are left
        alone, ``unplug`` removes them). Raises ProviderConflictError when
        a name or management address is held by another router.
        """
        ...

    async def get(self, *, router_id: str) -> Instance | None:
        """The router's instance as it is now, None if there is none. Changes nothing."""
        ...

    async def plug(self, *, router_id: str, port: PortSpec) -> Instance:
        """Hot-plug ``port`` into the running instance; return the instance.

        Idempotent: a plugged port keeps its NIC name (its MAC and MTU are
        fixed in place). Raises ProviderNotFoundError if there is no instance.
        """
        ...

    async def unplug(self, *, router_id: str, port_id: str) -> None:
        """Remove the port's NIC from the instance; idempotent (an absent port or instance is fine)."""
        ...

    async def destroy(self, *, router_id: str) -> None:
        """Unregister the appliance, remove its NICs and the instance; idempotent, leaves nothing."""
        ...

    async def list(self) -> list[Instance]:
        """Every instance this provider made that exists now (adoption after a restart)."""
        ...

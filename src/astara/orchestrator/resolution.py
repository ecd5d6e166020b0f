"""Resolution: which resources one Neutron notification concerns, exactly.

Events only say *which* resource changed (DESIGN, "How the orchestrator
thinks"); ``resolve`` finds that resource's key and the reconciler reads the
desired state itself. Every router is found through the event's payload or
through the ports that attach it, never through the project ("the project's
first router"), so several routers per project work. Called by
``astara.orchestrator.intake`` for every notification it takes off the bus.

The table (``r``: a router id)::

    router.{create,update,delete}.end   payload router.id / router_id (bulk: routers[].id)
    router.interface.{create,delete}    router_interface.id
    port.{create,update,delete}.end     device_owner network:router_* with a device_id: that
                                        device_id; else the routers with an *interface* on
                                        the subnets of its fixed_ips (delete: the port as it
                                        was); plus the routers its previous event named
    floatingip.{create,update,delete}.end
                                        router_id of the state in the payload, plus the
                                        router_id of the floating IP's previous event
    subnet.{create,update,delete}.end   routers with an interface or a gateway on the subnet
    network.{create,update,delete}.end  routers with an interface or a gateway on the network
    *.start, anything else              nothing (logged at debug)

Why these choices:

- ``.start`` carries the request body, before the change is made or even
  authorized; the ``.end`` that follows a success carries the result. A lone
  ``.start`` (refused, failed) changed nothing, so only ``.end`` triggers work.
  ``router.interface.*`` has no ``.start``/``.end`` and always triggers.
- A port's subnets matter to the routers *serving* them (DHCP, metadata,
  floating IPs), so only interfaces count: a port on the external network
  does not wake every router with a gateway there. A subnet or network
  change (gateway IP, DNS servers, MTU, an IPv6 subnet added to the external
  network) matters to gateways too. A network is looked up by
  ``network_id``: the same routers as "ports on the network's subnets", in
  one query. Neutron refuses to delete a subnet or network that router ports
  use, so those lookups normally find nothing; they are kept for the race
  rather than special-cased.
- Old routers. A floating IP update's payload (ours and Neutron's) carries
  only the new state, yet moving it from router 1 to router 2, or
  disassociating it, concerns router 1 too; a port whose fixed IPs or device
  change likewise. ``LastRouters`` remembers, per floating IP and per port,
  the routers its last event resolved to; an event resolves to the routers
  of its new state plus the remembered ones, then replaces the memory
  (``delete.end`` forgets it). The memory is bounded (least recently used
  leave first) and starts empty: after a restart or an eviction one event
  misses the old router, which the orchestrator's startup sweep (every
  router reconciled once) covers. A stale remembered router costs a spare
  reconcile, never a wrong one. (``.start`` cannot stand in: it is handled
  after the change may already be made, so a lookup then is a race.)

Invariants: ``resolve`` reads only the notification, the reader and the
memory; it changes the memory only when it returns; it raises
``MalformedEventError`` for a payload without the ids its event type
promises, and otherwise only what the reader raises.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from astara.orchestrator.neutron_reader import NetworkReader, PortRole, RouterPort
from astara.wire.neutron_events import MalformedEventError, Notification

log = logging.getLogger(__name__)

DEFAULT_MEMORY_SIZE = 65_536
"""Ports and floating IPs whose last routers ``LastRouters`` keeps."""

_ROUTER_OWNER_PREFIX: Final = "network:router_"
_END_ACTIONS: Final = frozenset({"create.end", "update.end", "delete.end"})
_INTERFACE_ACTIONS: Final = frozenset({"interface.create", "interface.delete"})


class ResourceKind(StrEnum):
    """The kinds of resource the orchestrator reconciles (load balancers come later)."""

    ROUTER = "router"


@dataclass(frozen=True, slots=True, order=True)
class ResourceKey:
    """Which resource to reconcile: its kind and its Neutron id."""

    kind: ResourceKind
    id: str

    @classmethod
    def router(cls, router_id: str) -> ResourceKey:
        return cls(ResourceKind.ROUTER, router_id)

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


class LastRouters:
    """The routers each port and floating IP concerned at its last event; bounded, LRU."""

    def __init__(self, *, size: int = DEFAULT_MEMORY_SIZE) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self._size = size
        self._routers: OrderedDict[tuple[str, str], frozenset[str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._routers)

    def recall(self, resource: str, object_id: str) -> frozenset[str]:
        """What ``remember`` last stored for the object; empty when nothing (or forgotten)."""
        key = (resource, object_id)
        if key not in self._routers:
            return frozenset()
        self._routers.move_to_end(key)
        return self._routers[key]

    def remember(self, resource: str, object_id: str, routers: Iterable[str]) -> None:
        key = (resource, object_id)
        self._routers[key] = frozenset(routers)
        self._routers.move_to_end(key)
        while len(self._routers) > self._size:
            self._routers.popitem(last=False)

    def forget(self, resource: str, object_id: str) -> None:
        self._routers.pop((resource, object_id), None)


async def resolve(
    notification: Notification, reader: NetworkReader, *, memory: LastRouters | None = None
) -> set[ResourceKey]:
    """The resources ``notification`` concerns, per the module's table.

    ``memory`` carries the old routers of ports and floating IPs from one
    call to the next (without one, only the event and the reader are used)
    and is updated only when the call succeeds. Raises
    ``MalformedEventError`` when the payload lacks what its event type
    promises, and what ``reader`` raises.
    """
    resource, _, action = notification.event_type.partition(".")
    handler = _HANDLERS.get(resource)
    known = action in _END_ACTIONS or (resource == "router" and action in _INTERFACE_ACTIONS)
    if handler is None or not known:
        log.debug("%s concerns no resource we reconcile", notification.event_type)
        return set()
    routers = await handler(
        action, notification.payload, reader, LastRouters() if memory is None else memory
    )
    return {ResourceKey.router(r) for r in routers}


Handler = Callable[[str, Mapping[str, Any], NetworkReader, LastRouters], Awaitable[set[str]]]


async def _routers_of_router(
    action: str, payload: Mapping[str, Any], reader: NetworkReader, memory: LastRouters
) -> set[str]:
    if action in _INTERFACE_ACTIONS:
        info = payload.get("router_interface")
        if not isinstance(info, Mapping):
            raise MalformedEventError("payload router_interface is not an object")
        return {_required(info, "id", "router_interface")}
    return _ids(payload, "router")


async def _routers_of_port(
    action: str, payload: Mapping[str, Any], reader: NetworkReader, memory: LastRouters
) -> set[str]:
    async def now(port: Mapping[str, Any]) -> frozenset[str]:
        owner, device = _text(port, "device_owner", "port"), _text(port, "device_id", "port")
        if owner is not None and owner.startswith(_ROUTER_OWNER_PREFIX) and device is not None:
            return frozenset({device})
        attached = await reader.router_ports_on_subnets(subnet_ids=_subnets_of(port))
        return _routers(attached, roles={PortRole.INTERFACE})

    return await _tracked("port", action, payload, memory, now)


async def _routers_of_floatingip(
    action: str, payload: Mapping[str, Any], reader: NetworkReader, memory: LastRouters
) -> set[str]:
    async def now(floatingip: Mapping[str, Any]) -> frozenset[str]:
        router = _text(floatingip, "router_id", "floatingip")
        return frozenset() if router is None else frozenset({router})

    return await _tracked("floatingip", action, payload, memory, now)


async def _routers_of_subnet(
    action: str, payload: Mapping[str, Any], reader: NetworkReader, memory: LastRouters
) -> set[str]:
    attached = await reader.router_ports_on_subnets(subnet_ids=_ids(payload, "subnet"))
    return set(_routers(attached, roles=set(PortRole)))


async def _routers_of_network(
    action: str, payload: Mapping[str, Any], reader: NetworkReader, memory: LastRouters
) -> set[str]:
    found: set[str] = set()
    for network_id in sorted(_ids(payload, "network")):
        attached = await reader.router_ports_on_network(network_id=network_id)
        found |= _routers(attached, roles=set(PortRole))
    return found


_HANDLERS: Final[Mapping[str, Handler]] = {
    "router": _routers_of_router,
    "port": _routers_of_port,
    "floatingip": _routers_of_floatingip,
    "subnet": _routers_of_subnet,
    "network": _routers_of_network,
}


async def _tracked(
    resource: str,
    action: str,
    payload: Mapping[str, Any],
    memory: LastRouters,
    now: Callable[[Mapping[str, Any]], Awaitable[frozenset[str]]],
) -> set[str]:
    """Routers of each object now, plus those remembered from its last event; then remember."""
    current: dict[str, frozenset[str]] = {}
    for state in _states(payload, resource):
        current[_required(state, "id", resource)] = await now(state)
    gone = _text(payload, f"{resource}_id", "payload")
    ids = set(current) | ({gone} if gone else set())
    if not ids:
        raise MalformedEventError(f"the payload names no {resource}")
    found = {r for routers in current.values() for r in routers}
    for object_id in ids:
        found |= memory.recall(resource, object_id)
    for object_id in ids:
        if action == "delete.end":
            memory.forget(resource, object_id)
        else:
            memory.remember(resource, object_id, current.get(object_id, frozenset()))
    return found


def _routers(ports: Iterable[RouterPort], *, roles: set[PortRole]) -> frozenset[str]:
    return frozenset(p.router_id for p in ports if p.role in roles)


def _states(payload: Mapping[str, Any], resource: str) -> list[Mapping[str, Any]]:
    """The resource objects a payload carries: ``{"<r>": {...}}`` or, bulk, ``{"<r>s": [...]}``."""
    single = payload.get(resource)
    if single is not None:
        if not isinstance(single, Mapping):
            raise MalformedEventError(f"payload {resource} is not an object")
        return [single]
    many = payload.get(f"{resource}s")
    if many is None:
        return []
    if not isinstance(many, list) or not all(isinstance(m, Mapping) for m in many):
        raise MalformedEventError(f"payload {resource}s is not a list of objects")
    return many


def _ids(payload: Mapping[str, Any], resource: str) -> set[str]:
    """The ids of the objects in the payload and its ``<r>_id`` (deletes); at least one."""
    ids = {_required(state, "id", resource) for state in _states(payload, resource)}
    gone = _text(payload, f"{resource}_id", "payload")
    if gone is not None:
        ids.add(gone)
    if not ids:
        raise MalformedEventError(f"the payload names no {resource}")
    return ids


def _subnets_of(port: Mapping[str, Any]) -> set[str]:
    fixed_ips = port.get("fixed_ips") or []
    if not isinstance(fixed_ips, list) or not all(isinstance(ip, Mapping) for ip in fixed_ips):
        raise MalformedEventError("port fixed_ips is not a list of objects")
    return {s for ip in fixed_ips if (s := _text(ip, "subnet_id", "port fixed_ips")) is not None}


def _text(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    """``obj[key]`` when it is a non-empty string; None when absent, null or empty."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedEventError(f"{where} {key} is a {type(value).__name__}, not a string")
    return value


def _required(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _text(obj, key, where)
    if value is None:
        raise MalformedEventError(f"{where} has no {key}")
    return value

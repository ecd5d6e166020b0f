"""What the router driver reads from Neutron: a router and everything around it.

``RouterReader`` is the read-only view ``astara.orchestrator.router_driver``
builds an appliance configuration from; ``HttpRouterReader`` implements it over
Neutron's v2.0 REST API (``astara network-api`` or a real Neutron), with a
client from ``astara.orchestrator.neutron_reader.neutron_client``.

Invariants:

- Read-only: only ``GET``; every call is idempotent.
- Admin view: a router's gateway port belongs to no project; give the client
  admin credentials (``noauth_admin_headers()`` or an admin token).
- Answers are parsed into frozen records here; an object without a Neutron
  object's shape is a ``NetworkResponseError``, never a ``KeyError`` later.
- Lists follow ``<collection>_links`` ``next`` links; id filters go in chunks of
  ``SUBNETS_PER_REQUEST`` to bound the URL length.

Errors: those of ``neutron_reader`` (``NetworkUnavailableError``: retry later;
``NetworkResponseError``: permanent), plus ``RouterGone`` when the router
itself is not found (404): the caller treats the router as deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

from astara.orchestrator.neutron_reader import (
    MAX_PAGES,
    SUBNETS_PER_REQUEST,
    NetworkReadError,
    NetworkResponseError,
    neutron_get,
)

T = TypeVar("T")


class RouterGone(NetworkReadError):  # noqa: N818 - the name the state machine knows
    """The router does not exist (any more): treat it as deleted."""

    def __init__(self, router_id: str) -> None:
        super().__init__(f"router {router_id} not found")
        self.router_id = router_id


@dataclass(frozen=True, slots=True, kw_only=True)
class FixedIP:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRecord:
    destination: str
    nexthop: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterRecord:
    id: str
    name: str
    project_id: str
    gateway_network_id: str | None
    routes: tuple[RouteRecord, ...]
    #: the status the network API shows (None: it shows none)
    status: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PortRecord:
    id: str
    network_id: str
    mac_address: str
    device_id: str
    device_owner: str
    fixed_ips: tuple[FixedIP, ...]
    dns_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubnetRecord:
    id: str
    network_id: str
    cidr: str
    gateway_ip: str | None
    enable_dhcp: bool
    dns_nameservers: tuple[str, ...]
    host_routes: tuple[RouteRecord, ...]
    ipv6_ra_mode: str | None
    ipv6_address_mode: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkRecord:
    id: str
    name: str
    mtu: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FloatingIPRecord:
    id: str
    floating_ip_address: str
    fixed_ip_address: str | None
    router_id: str | None


class RouterReader(Protocol):
    """The lookups building a router's configuration needs; read-only and idempotent.

    Every method raises ``NetworkUnavailableError`` or ``NetworkResponseError``;
    ``router`` also ``RouterGone``. Lookups by ids return what exists, in no order.
    """

    async def router(self, *, router_id: str) -> RouterRecord: ...

    async def router_ports(self, *, router_id: str) -> Sequence[PortRecord]:
        """Every port whose ``device_id`` is the router (interfaces and gateway)."""
        ...

    async def subnets(self, *, subnet_ids: Collection[str]) -> Sequence[SubnetRecord]: ...

    async def networks(self, *, network_ids: Collection[str]) -> Sequence[NetworkRecord]: ...

    async def ports_on_subnets(self, *, subnet_ids: Collection[str]) -> Sequence[PortRecord]:
        """Every port with a fixed IP on any of ``subnet_ids``, each once."""
        ...

    async def floating_ips(self, *, router_id: str) -> Sequence[FloatingIPRecord]:
        """The floating IPs whose ``router_id`` is the router."""
        ...


def _str(obj: Mapping[str, Any], key: str, *, optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string, not {value!r}")
    return value


def _objects(value: Any, key: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TypeError(f"{key} must be a list of objects")
    return value


def _routes(value: Any, key: str) -> tuple[RouteRecord, ...]:
    return tuple(
        RouteRecord(destination=_str(r, "destination"), nexthop=_str(r, "nexthop"))
        for r in _objects(value, key)
    )


def parse_router(obj: Mapping[str, Any]) -> RouterRecord:
    """A ``RouterRecord`` from a Neutron router object; ``TypeError``/``ValueError`` on a wrong shape."""
    gateway = obj.get("external_gateway_info") or {}
    if not isinstance(gateway, dict):
        raise TypeError("external_gateway_info must be an object")
    return RouterRecord(
        id=_str(obj, "id"),
        name=_str(obj, "name", optional=True) or "",
        project_id=_str(obj, "project_id", optional=True) or _str(obj, "tenant_id"),
        gateway_network_id=_str(gateway, "network_id", optional=True),
        routes=_routes(obj.get("routes"), "routes"),
        status=_str(obj, "status", optional=True),
    )


def parse_port(obj: Mapping[str, Any]) -> PortRecord:
    """A ``PortRecord`` from a Neutron port object; ``TypeError``/``ValueError`` on a wrong shape."""
    fixed = _objects(obj.get("fixed_ips"), "fixed_ips")
    return PortRecord(
        id=_str(obj, "id"),
        network_id=_str(obj, "network_id"),
        mac_address=_str(obj, "mac_address"),
        device_id=_str(obj, "device_id", optional=True) or "",
        device_owner=_str(obj, "device_owner", optional=True) or "",
        fixed_ips=tuple(
            FixedIP(subnet_id=_str(f, "subnet_id"), ip_address=_str(f, "ip_address")) for f in fixed
        ),
        dns_name=_str(obj, "dns_name", optional=True) or "",
    )


def parse_subnet(obj: Mapping[str, Any]) -> SubnetRecord:
    """A ``SubnetRecord`` from a Neutron subnet object; ``TypeError``/``ValueError`` on a wrong shape."""
    servers = obj.get("dns_nameservers") or []
    if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
        raise TypeError("dns_nameservers must be a list of strings")
    return SubnetRecord(
        id=_str(obj, "id"),
        network_id=_str(obj, "network_id"),
        cidr=_str(obj, "cidr"),
        gateway_ip=_str(obj, "gateway_ip", optional=True),
        enable_dhcp=bool(obj.get("enable_dhcp", True)),
        dns_nameservers=tuple(servers),
        host_routes=_routes(obj.get("host_routes"), "host_routes"),
        ipv6_ra_mode=_str(obj, "ipv6_ra_mode", optional=True),
        ipv6_address_mode=_str(obj, "ipv6_address_mode", optional=True),
    )


def parse_network(obj: Mapping[str, Any]) -> NetworkRecord:
    """A ``NetworkRecord`` from a Neutron network object; ``TypeError``/``ValueError`` on a wrong shape."""
    mtu = obj.get("mtu")
    return NetworkRecord(
        id=_str(obj, "id"),
        name=_str(obj, "name", optional=True) or "",
        mtu=mtu if isinstance(mtu, int) and not isinstance(mtu, bool) else None,
    )


def parse_floating_ip(obj: Mapping[str, Any]) -> FloatingIPRecord:
    """A ``FloatingIPRecord`` from a Neutron floating IP; ``TypeError``/``ValueError`` on a wrong shape."""
    return FloatingIPRecord(
        id=_str(obj, "id"),
        floating_ip_address=_str(obj, "floating_ip_address"),
        fixed_ip_address=_str(obj, "fixed_ip_address", optional=True),
        router_id=_str(obj, "router_id", optional=True),
    )


class HttpRouterReader:
    """``RouterReader`` over Neutron's v2.0 REST API; see the module invariants."""

    def __init__(self, *, client: httpx.AsyncClient) -> None:
        self._client = client

    async def router(self, *, router_id: str) -> RouterRecord:
        path = f"/v2.0/routers/{router_id}"
        response = await self._request(path, None)
        if response.status_code == 404:
            raise RouterGone(router_id)
        body = _json(path, response)
        if not isinstance(body, dict) or not isinstance(body.get("router"), dict):
            raise NetworkResponseError(f'GET {path}: the answer has no "router" object')
        return _parsed(path, parse_router, body["router"])

    async def router_ports(self, *, router_id: str) -> Sequence[PortRecord]:
        found = await self._list("ports", [("device_id", router_id)])
        ports = [_parsed("/v2.0/ports", parse_port, p) for p in found]
        return [p for p in ports if p.device_id == router_id]

    async def subnets(self, *, subnet_ids: Collection[str]) -> Sequence[SubnetRecord]:
        found = await self._by_ids("subnets", "id", subnet_ids)
        subnets = {s.id: s for s in (_parsed("/v2.0/subnets", parse_subnet, o) for o in found)}
        return [s for s in subnets.values() if s.id in set(subnet_ids)]

    async def networks(self, *, network_ids: Collection[str]) -> Sequence[NetworkRecord]:
        found = await self._by_ids("networks", "id", network_ids)
        nets = {n.id: n for n in (_parsed("/v2.0/networks", parse_network, o) for o in found)}
        return [n for n in nets.values() if n.id in set(network_ids)]

    async def ports_on_subnets(self, *, subnet_ids: Collection[str]) -> Sequence[PortRecord]:
        wanted = set(subnet_ids)
        found = await self._by_ids("ports", "fixed_ips", subnet_ids, prefix="subnet_id=")
        ports = {p.id: p for p in (_parsed("/v2.0/ports", parse_port, o) for o in found)}
        # checked again: a server ignoring the filter must not leak other subnets' ports
        return [p for p in ports.values() if any(f.subnet_id in wanted for f in p.fixed_ips)]

    async def floating_ips(self, *, router_id: str) -> Sequence[FloatingIPRecord]:
        found = await self._list("floatingips", [("router_id", router_id)])
        fips = [_parsed("/v2.0/floatingips", parse_floating_ip, o) for o in found]
        return [f for f in fips if f.router_id == router_id]

    async def snapshot(self) -> SnapshotRouterReader:
        """Every router, port, subnet, network and floating IP, in five lists: the whole
        view at once, for a sweep of every router (see ``SnapshotRouterReader``)."""
        routers = await self._list("routers", [])
        ports = await self._list("ports", [])
        subnets = await self._list("subnets", [])
        networks = await self._list("networks", [])
        fips = await self._list("floatingips", [])
        return SnapshotRouterReader(
            routers=[_parsed("/v2.0/routers", parse_router, o) for o in routers],
            ports=[_parsed("/v2.0/ports", parse_port, o) for o in ports],
            subnets=[_parsed("/v2.0/subnets", parse_subnet, o) for o in subnets],
            networks=[_parsed("/v2.0/networks", parse_network, o) for o in networks],
            floating_ips=[_parsed("/v2.0/floatingips", parse_floating_ip, o) for o in fips],
        )

    async def _by_ids(
        self, collection: str, key: str, ids: Collection[str], *, prefix: str = ""
    ) -> list[Mapping[str, Any]]:
        wanted = sorted(set(ids))
        found: list[Mapping[str, Any]] = []
        for start in range(0, len(wanted), SUBNETS_PER_REQUEST):
            chunk = wanted[start : start + SUBNETS_PER_REQUEST]
            found += await self._list(collection, [(key, prefix + i) for i in chunk])
        return found

    async def _list(
        self, collection: str, params: list[tuple[str, str]]
    ) -> list[Mapping[str, Any]]:
        """Every object of ``GET /v2.0/<collection>?params``, following ``next`` links."""
        path = f"/v2.0/{collection}"
        url: str | None = path
        request_params: tuple[tuple[str, str], ...] | None = tuple(params)
        found: list[Mapping[str, Any]] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return found
            body = _json(path, await self._request(url, request_params))
            try:
                page, url = _page(collection, body)
            except (TypeError, ValueError) as exc:
                raise NetworkResponseError(f"GET {path}: {exc}") from exc
            request_params = None  # a next link carries the query itself
            found += page
        raise NetworkResponseError(f"GET {path}: more than {MAX_PAGES} pages")

    async def _request(
        self, url: str, params: tuple[tuple[str, str], ...] | None
    ) -> httpx.Response:
        return await neutron_get(self._client, url, params, allow_404=True)


class SnapshotRouterReader:
    """A ``RouterReader`` answering from one read of the whole view (``HttpRouterReader.
    snapshot``), with the live reader's answers: a router it does not hold is ``RouterGone``.

    For the orchestrator's startup sweep: reconciling 1,000 routers with six reads each
    was most of a restart. It is as fresh as the moment it was read; the orchestrator
    stops using it at the first notification after that moment (``runner``).
    """

    def __init__(
        self,
        *,
        routers: Sequence[RouterRecord],
        ports: Sequence[PortRecord],
        subnets: Sequence[SubnetRecord],
        networks: Sequence[NetworkRecord],
        floating_ips: Sequence[FloatingIPRecord],
    ) -> None:
        self._routers = {r.id: r for r in routers}
        self._subnets = {s.id: s for s in subnets}
        self._networks = {n.id: n for n in networks}
        self._ports_of: dict[str, list[PortRecord]] = {}
        self._ports_on: dict[str, list[PortRecord]] = {}
        for port in {p.id: p for p in ports}.values():
            self._ports_of.setdefault(port.device_id, []).append(port)
            for subnet_id in {f.subnet_id for f in port.fixed_ips}:
                self._ports_on.setdefault(subnet_id, []).append(port)
        self._fips: dict[str, list[FloatingIPRecord]] = {}
        for fip in floating_ips:
            if fip.router_id is not None:
                self._fips.setdefault(fip.router_id, []).append(fip)

    def __len__(self) -> int:
        return len(self._routers)

    async def router(self, *, router_id: str) -> RouterRecord:
        try:
            return self._routers[router_id]
        except KeyError:
            raise RouterGone(router_id) from None

    async def router_ports(self, *, router_id: str) -> Sequence[PortRecord]:
        return list(self._ports_of.get(router_id, ()))

    async def subnets(self, *, subnet_ids: Collection[str]) -> Sequence[SubnetRecord]:
        return [self._subnets[i] for i in set(subnet_ids) if i in self._subnets]

    async def networks(self, *, network_ids: Collection[str]) -> Sequence[NetworkRecord]:
        return [self._networks[i] for i in set(network_ids) if i in self._networks]

    async def ports_on_subnets(self, *, subnet_ids: Collection[str]) -> Sequence[PortRecord]:
        found = {p.id: p for i in set(subnet_ids) for p in self._ports_on.get(i, ())}
        return list(found.values())

    async def floating_ips(self, *, router_id: str) -> Sequence[FloatingIPRecord]:
        return list(self._fips.get(router_id, ()))


def _json(path: str, response: httpx.Response) -> object:
    if response.status_code != 200:
        raise NetworkResponseError(f"GET {path}: the network API answered {response.status_code}")
    try:
        return response.json()
    except ValueError as exc:
        raise NetworkResponseError(f"GET {path}: the answer is not JSON") from exc


def _parsed(path: str, parse: Callable[[Mapping[str, Any]], T], obj: Mapping[str, Any]) -> T:
    try:
        return parse(obj)
    except (ValueError, TypeError) as exc:
        raise NetworkResponseError(f"GET {path}: {exc}") from exc


def _page(collection: str, body: object) -> tuple[list[Mapping[str, Any]], str | None]:
    """The objects of one page and the ``next`` link, if any."""
    if not isinstance(body, dict):
        raise TypeError("the answer is not an object")
    if not isinstance(body.get(collection), list):
        raise TypeError(f'the answer has no "{collection}" list')
    objects = _objects(body[collection], collection)
    links = body.get(f"{collection}_links") or []
    if not isinstance(links, list):
        raise TypeError(f"{collection}_links is not a list")
    following = [
        link["href"]
        for link in links
        if isinstance(link, dict)
        and link.get("rel") == "next"
        and isinstance(link.get("href"), str)
    ]
    # a page without objects ends the listing even if a link says otherwise
    return objects, (following[0] if following and objects else None)

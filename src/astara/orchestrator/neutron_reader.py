"""The orchestrator's read-only view of Neutron: which routers have ports where.

Intake (``astara.orchestrator.intake``) asks a ``NetworkReader`` the questions
a notification's payload cannot answer — "which routers are attached to this
subnet, to this network?" — and nothing else. Two implementations, chosen
by name:

- ``HttpNetworkReader``: Neutron's v2.0 REST API, ours (``astara
  network-api``) or a real Neutron. One ``GET /v2.0/ports`` per question,
  filtered by router ``device_owner`` and ``fixed_ips=subnet_id=…`` or
  ``network_id``; pages followed through ``ports_links``.
- ``FakeNetworkReader``: an in-memory, stateful stand-in for tests and demos.

Invariants:

- Read-only: only ``GET``; no call changes anything, every call is idempotent.
- Admin view: gateway ports belong to no project (``project_id`` ``""``) and
  only an admin sees them. Give ``HttpNetworkReader`` admin credentials
  (no-auth: ``X-Roles: admin``; Keystone: an admin token) or gateways are missed.
- A ``RouterPort`` is a port whose ``device_owner`` makes its ``device_id`` a
  router id (``INTERFACE_OWNERS``, ``GATEWAY_OWNERS``) and whose
  ``device_id`` is set; every other port is invisible here.

Errors, and what the caller does next::

    NetworkReadError
     ├── NetworkUnavailableError  API unreachable, timed out, 5xx or 429: retry after a delay
     └── NetworkResponseError     any other 4xx, or an answer that is not Neutron's:
                                  permanent for this question; fix the URL or credentials
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import httpx

INTERFACE_OWNERS = (
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
)
"""``device_owner`` of a router's interface on a tenant subnet (legacy, DVR, HA routers)."""

GATEWAY_OWNERS = ("network:router_gateway",)
"""``device_owner`` of a router's port on its external network."""

DEFAULT_TIMEOUT = 10.0
"""Seconds ``neutron_client`` waits for one API answer."""

SUBNETS_PER_REQUEST = 40
"""Subnet ids per ``GET /v2.0/ports``: bounds the URL length (one id is 36 characters)."""

MAX_PAGES = 1000
"""Pages followed for one question before the answer is called broken (a link loop)."""

_FIELDS = ("id", "device_id", "device_owner", "network_id", "fixed_ips")


class NetworkReadError(Exception):
    """Base of every error a ``NetworkReader`` raises on purpose."""


class NetworkUnavailableError(NetworkReadError):
    """The API could not answer now (down, timeout, 5xx, 429); retry after a delay."""


class NetworkResponseError(NetworkReadError):
    """The API refused the question (4xx) or answered something that is not Neutron's."""


class PortRole(StrEnum):
    """What a router port attaches the router to."""

    INTERFACE = "interface"
    GATEWAY = "gateway"


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterPort:
    """One port of a router, as far as resolution needs it."""

    port_id: str
    router_id: str
    role: PortRole
    network_id: str
    subnet_ids: frozenset[str]


def router_port_from_neutron(port: Mapping[str, Any]) -> RouterPort | None:
    """The ``RouterPort`` a Neutron port object describes; None for a port no router owns.

    Raises ``ValueError`` when ``port`` does not have a Neutron port's shape.
    """
    owner, router_id = port.get("device_owner"), port.get("device_id")
    if owner in INTERFACE_OWNERS:
        role = PortRole.INTERFACE
    elif owner in GATEWAY_OWNERS:
        role = PortRole.GATEWAY
    else:
        return None
    if not router_id:
        return None
    port_id, network_id, fixed_ips = port.get("id"), port.get("network_id"), port.get("fixed_ips")
    if not all(isinstance(v, str) for v in (port_id, router_id, network_id)):
        raise ValueError("a port's id, device_id and network_id must be strings")
    if not isinstance(fixed_ips, list) or not all(isinstance(ip, dict) for ip in fixed_ips):
        raise ValueError("a port's fixed_ips must be a list of objects")
    subnets = frozenset(str(ip["subnet_id"]) for ip in fixed_ips if ip.get("subnet_id"))
    return RouterPort(
        port_id=str(port_id),
        router_id=str(router_id),
        role=role,
        network_id=str(network_id),
        subnet_ids=subnets,
    )


class NetworkReader(Protocol):
    """The lookups against Neutron that resolving an event needs. Read-only and idempotent.

    Both methods raise ``NetworkUnavailableError`` (retry later) or
    ``NetworkResponseError`` (permanent), nothing else on purpose.
    """

    async def router_ports_on_subnets(
        self, *, subnet_ids: Collection[str]
    ) -> frozenset[RouterPort]:
        """Router interface and gateway ports with a fixed IP on any of ``subnet_ids``.

        No subnet ids: the empty set, without asking anyone.
        """
        ...

    async def router_ports_on_network(self, *, network_id: str) -> frozenset[RouterPort]:
        """Router interface and gateway ports on the network ``network_id``."""
        ...


KEEPALIVE_EXPIRY = 2.0
"""Seconds an idle connection to the network API is kept for reuse."""


def neutron_client(
    *, url: str, headers: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT
) -> httpx.AsyncClient:
    """An HTTP client for ``HttpNetworkReader``; the caller owns it (``await client.aclose()``).

    ``url`` is Neutron's endpoint, ``http://host:9696`` (a trailing ``/v2.0``
    is accepted). ``headers`` go with every request: ``noauth_admin_headers()``
    for a no-auth service, ``{"X-Auth-Token": …}`` for a Keystone one.
    """
    base = url.rstrip("/")
    base = base.removesuffix("/v2.0")
    # idle connections are dropped before a server's keep-alive timeout (uvicorn's is 5 s)
    # can close them under a request about to reuse one
    limits = httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY)
    return httpx.AsyncClient(
        base_url=base + "/", headers=dict(headers or {}), timeout=timeout, limits=limits
    )


def noauth_admin_headers(*, project: str = "admin") -> dict[str, str]:
    """Headers that make a no-auth Neutron (or ours) treat the caller as an admin of ``project``."""
    return {"X-Project-Id": project, "X-Roles": "admin"}


class HttpNetworkReader:
    """``NetworkReader`` over Neutron's v2.0 REST API; see the module invariants."""

    def __init__(self, *, client: httpx.AsyncClient) -> None:
        self._client = client

    async def router_ports_on_subnets(
        self, *, subnet_ids: Collection[str]
    ) -> frozenset[RouterPort]:
        wanted = sorted(set(subnet_ids))
        found: set[RouterPort] = set()
        for start in range(0, len(wanted), SUBNETS_PER_REQUEST):
            chunk = wanted[start : start + SUBNETS_PER_REQUEST]
            found |= await self._router_ports([("fixed_ips", f"subnet_id={s}") for s in chunk])
        # checked again so that a server which ignores a filter cannot wake every router
        return frozenset(p for p in found if p.subnet_ids & set(wanted))

    async def router_ports_on_network(self, *, network_id: str) -> frozenset[RouterPort]:
        found = await self._router_ports([("network_id", network_id)])
        return frozenset(p for p in found if p.network_id == network_id)

    async def _router_ports(self, filters: list[tuple[str, str]]) -> frozenset[RouterPort]:
        params = filters + [("device_owner", o) for o in INTERFACE_OWNERS + GATEWAY_OWNERS]
        params += [("fields", f) for f in _FIELDS]
        found: set[RouterPort] = set()
        url: str | None = "/v2.0/ports"
        request_params: tuple[tuple[str, str], ...] | None = tuple(params)
        for _ in range(MAX_PAGES):
            if url is None:
                return frozenset(found)
            body = await self._get(url, request_params)
            ports, url = _ports_page(body)
            request_params = None  # a next link carries the query itself
            for port in ports:
                try:
                    router_port = router_port_from_neutron(port)
                except ValueError as exc:
                    raise NetworkResponseError(f"GET /v2.0/ports: {exc}") from exc
                if router_port is not None:
                    found.add(router_port)
        raise NetworkResponseError(f"GET /v2.0/ports: more than {MAX_PAGES} pages of ports")

    async def _get(self, url: str, params: tuple[tuple[str, str], ...] | None) -> object:
        response = await neutron_get(self._client, url, params)
        try:
            return response.json()
        except ValueError as exc:
            raise NetworkResponseError("GET /v2.0/ports: the answer is not JSON") from exc


async def neutron_get(
    client: httpx.AsyncClient,
    url: str,
    params: tuple[tuple[str, str], ...] | None,
    *,
    allow_404: bool = False,
) -> httpx.Response:
    """GET from the Neutron API, its failures sorted: NetworkUnavailableError when it did not
    answer or answered 5xx/429 (retry), NetworkResponseError for any other refusal."""
    path = url.split("?", 1)[0]
    try:
        try:
            response = await client.get(url, params=params)
        except (httpx.ReadError, httpx.RemoteProtocolError):
            # a kept-alive connection the server closed as the request went out: a GET is
            # safe to send again, once, on a new connection
            response = await client.get(url, params=params)
    except httpx.TransportError as exc:
        raise NetworkUnavailableError(
            f"the network API did not answer GET {path}: {exc!r}"
        ) from exc
    status = response.status_code
    if status >= 500 or status == 429:
        raise NetworkUnavailableError(f"GET {path}: the network API answered {status}")
    if status != 200 and not (allow_404 and status == 404):
        raise NetworkResponseError(
            f"GET {path}: the network API answered {status}: {response.text[:200]}"
        )
    return response


def _ports_page(body: object) -> tuple[list[Mapping[str, Any]], str | None]:
    """The ports of one page and the ``next`` link, if any."""
    if not isinstance(body, dict) or not isinstance(body.get("ports"), list):
        raise NetworkResponseError('GET /v2.0/ports: the answer has no "ports" list')
    ports = body["ports"]
    if not all(isinstance(p, dict) for p in ports):
        raise NetworkResponseError("GET /v2.0/ports: a port is not an object")
    links = body.get("ports_links") or []
    if not isinstance(links, list):
        raise NetworkResponseError("GET /v2.0/ports: ports_links is not a list")
    following = [
        link["href"]
        for link in links
        if isinstance(link, dict)
        and link.get("rel") == "next"
        and isinstance(link.get("href"), str)
    ]
    # a page without ports ends the listing even if a link says otherwise
    return ports, (following[0] if following and ports else None)


class FakeNetworkReader:
    """An in-memory ``NetworkReader``: the router ports it was given, queried like Neutron.

    State changes (``add``, ``remove``, ``remove_router``) are idempotent.
    ``fail`` queues errors to raise, one per lookup, before answering again.
    ``calls`` counts lookups, failed ones included.
    """

    def __init__(self, ports: Iterable[RouterPort] = ()) -> None:
        self._ports: dict[str, RouterPort] = {}
        self._failures: list[NetworkReadError] = []
        self.calls = 0
        for port in ports:
            self.add(port)

    @classmethod
    def from_neutron_ports(cls, ports: Iterable[Mapping[str, Any]]) -> FakeNetworkReader:
        """A reader that knows the router ports among Neutron port objects (others are ignored)."""
        found = (router_port_from_neutron(p) for p in ports)
        return cls(p for p in found if p is not None)

    @property
    def ports(self) -> frozenset[RouterPort]:
        return frozenset(self._ports.values())

    def add(self, port: RouterPort) -> None:
        """Know ``port``, replacing any port with its id."""
        self._ports[port.port_id] = port

    def remove(self, *, port_id: str) -> None:
        self._ports.pop(port_id, None)

    def remove_router(self, *, router_id: str) -> None:
        """Forget every port of the router, as deleting it does."""
        for port in [p for p in self._ports.values() if p.router_id == router_id]:
            del self._ports[port.port_id]

    def fail(self, *errors: NetworkReadError) -> None:
        """Raise ``errors``, in order, from the next lookups."""
        self._failures.extend(errors)

    async def router_ports_on_subnets(
        self, *, subnet_ids: Collection[str]
    ) -> frozenset[RouterPort]:
        if not subnet_ids:
            return frozenset()
        self._answer()
        wanted = set(subnet_ids)
        return frozenset(p for p in self._ports.values() if p.subnet_ids & wanted)

    async def router_ports_on_network(self, *, network_id: str) -> frozenset[RouterPort]:
        self._answer()
        return frozenset(p for p in self._ports.values() if p.network_id == network_id)

    def _answer(self) -> None:
        self.calls += 1
        if self._failures:
            raise self._failures.pop(0)

"""The orchestrator side of the instance-metadata proxy (port 9697, management network).

An appliance's metadata proxy (``astara.appliance.services.metadata``) takes an
instance's request on 169.254.169.254, identifies the instance by its source
address and forwards the request here with ``X-Forwarded-For`` (the
instance's fixed IP), ``X-Instance-ID`` (the port's device_id),
``X-Tenant-ID`` and ``X-Neutron-Network-ID``. ``create_metadata_app`` builds
the ASGI app that answers it, in one of two modes:

- forward (``nova`` given): the request goes on to Nova's metadata service at
  ``{nova.url}{path}`` with ``X-Instance-ID``, ``X-Tenant-ID``,
  ``X-Forwarded-For`` and ``X-Instance-ID-Signature`` = HMAC-SHA256 of the
  instance id under the shared secret, hex (as Neutron's metadata agent
  signs); Nova's status, content type and body come back. Nova unreachable:
  502; too slow: 504;
- self-answer (``nova`` None, the embedded default): the answers of
  ``astara.orchestrator.metadata_answers``, built from the port.

Invariants:

- only an appliance may ask: the TCP peer must be an address ``appliances``
  accepts, else 403; ``X-Forwarded-For`` (an IP address) and ``X-Instance-ID``
  must be present, else 400; only GET (and HEAD) are served, else 405;
- in both modes the instance is looked up (``InstanceLookup``): a port whose
  device_id is ``X-Instance-ID`` and which has ``X-Forwarded-For`` as a fixed
  IP (on ``X-Neutron-Network-ID``'s network when that header is given). No such
  port: 404, and nothing about any instance is answered or forwarded. The
  tenant sent on to Nova is the port's project, not the header's;
- the network API down: 503; its answer unusable: 502; a bug: 500. Bodies of
  errors are a short text, never a traceback;
- the shared secret and the signature are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from astara.orchestrator.metadata_answers import InstanceView, SubnetView, answer
from astara.orchestrator.neutron_reader import NetworkResponseError, NetworkUnavailableError
from astara.orchestrator.router_driver import neutron_network_id

log = logging.getLogger(__name__)

DEFAULT_PORT = 9697
"""Where the orchestrator's metadata service listens (management network)."""

MAX_NOVA_BODY = 4 * 1024 * 1024
"""Bytes of a Nova answer relayed at most (user-data is at most 64 KiB in Nova)."""

_NETWORK_HEADER = "X-Neutron-Network-ID"


def sign_instance_id(secret: bytes, instance_id: str) -> str:
    """``X-Instance-ID-Signature``: HMAC-SHA256 of the instance id under ``secret``, in hex."""
    return hmac.new(secret, instance_id.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class NovaMetadata:
    """A Nova metadata service to forward to: ``url`` is ``http://host:8775``."""

    url: str
    timeout: float = 10.0


class InstanceLookup(Protocol):
    """Finds an instance's port in the network API.

    Raises ``NetworkUnavailableError`` (retry later) or ``NetworkResponseError``.
    """

    async def find(
        self, *, device_id: str, address: str, network_id: str | None = None
    ) -> InstanceView | None:
        """The instance whose port has ``device_id`` and the fixed IP ``address``; None if none."""
        ...


class _RefusedError(Exception):
    """A request answered with an error status and a short reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Identity:
    instance_id: str
    address: str
    network_id: str | None


# -- the app ---------------------------------------------------------------------------------------
def create_metadata_app(
    *,
    lookup: InstanceLookup,
    appliances: Callable[[str], bool],
    nova: NovaMetadata | None,
    secret: bytes | None,
) -> Starlette:
    """The metadata service's ASGI app; see the module invariants.

    ``appliances(address)`` says whether a peer address (normalised, e.g.
    ``fdca:3ba5:a17a:acda::5``) is an appliance's management address. With
    ``nova``, ``secret`` is required (a ValueError otherwise).
    """
    if nova is not None and not secret:
        raise ValueError("forwarding to Nova's metadata service needs the shared secret")

    async def handle(request: Request) -> Response:
        try:
            return await _handle(request, lookup, appliances, nova, secret or b"")
        except _RefusedError as exc:
            return PlainTextResponse(exc.reason + "\n", status_code=exc.status)
        except Exception:
            log.exception("metadata: failed on %s %s", request.method, request.url.path)
            return PlainTextResponse("internal error\n", status_code=500)

    route = Route("/{path:path}", handle, methods=["GET", "HEAD", "POST", "PUT", "DELETE"])
    return Starlette(routes=[route])


async def _handle(
    request: Request,
    lookup: InstanceLookup,
    appliances: Callable[[str], bool],
    nova: NovaMetadata | None,
    secret: bytes,
) -> Response:
    _check_peer(request, appliances)
    if request.method not in ("GET", "HEAD"):
        raise _RefusedError(405, "only GET is served")
    identity = _identity(request.headers)
    view = await _find(lookup, identity)
    if nova is not None:
        response = await _forward(nova, secret, request, view)
    else:
        found = answer(view, request.url.path)
        if found is None:
            raise _RefusedError(404, "no such metadata")
        response = Response(found.body, media_type=found.content_type)
    log.debug(
        "metadata: %s %s for instance %s at %s -> %d",
        request.method,
        request.url.path,
        view.device_id,
        view.address,
        response.status_code,
    )
    return response


def _check_peer(request: Request, appliances: Callable[[str], bool]) -> None:
    host = request.client.host if request.client is not None else ""
    try:
        peer = ipaddress.ip_address(host)
    except ValueError:
        raise _RefusedError(403, "only an appliance may ask") from None
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    if not appliances(str(peer)):
        log.warning("metadata: refused a request from %s, not an appliance", peer)
        raise _RefusedError(403, "only an appliance may ask")


def _identity(headers: Mapping[str, str]) -> _Identity:
    forwarded = headers.get("X-Forwarded-For", "").strip()
    instance_id = headers.get("X-Instance-ID", "").strip()
    if not forwarded or not instance_id:
        raise _RefusedError(400, "X-Forwarded-For and X-Instance-ID are required")
    try:
        address = str(ipaddress.ip_address(forwarded))
    except ValueError:
        raise _RefusedError(400, "X-Forwarded-For is not an IP address") from None
    # the appliance names the network as its configuration did: "<network>:<port>" for a
    # second router port on one network (router_driver._suffixed)
    network_id = neutron_network_id(headers.get(_NETWORK_HEADER, "").strip()) or None
    return _Identity(instance_id, address, network_id)


async def _find(lookup: InstanceLookup, identity: _Identity) -> InstanceView:
    try:
        view = await lookup.find(
            device_id=identity.instance_id,
            address=identity.address,
            network_id=identity.network_id,
        )
    except NetworkUnavailableError as exc:
        log.warning("metadata: the network API is unavailable: %s", exc)
        raise _RefusedError(503, "the network API is unavailable") from exc
    except NetworkResponseError as exc:
        log.warning("metadata: the network API answered something unusable: %s", exc)
        raise _RefusedError(502, "the network API answered something unusable") from exc
    if view is None:
        raise _RefusedError(404, "no such instance at this address")
    return view


# -- forward mode ----------------------------------------------------------------------------------
async def _forward(
    nova: NovaMetadata, secret: bytes, request: Request, view: InstanceView
) -> Response:
    headers = {
        "X-Forwarded-For": view.address,
        "X-Instance-ID": view.device_id,
        "X-Tenant-ID": view.project_id,
        "X-Instance-ID-Signature": sign_instance_id(secret, view.device_id),
    }
    url = nova.url.rstrip("/") + request.url.path
    query = request.url.query
    try:
        async with (
            httpx.AsyncClient(timeout=nova.timeout) as client,
            client.stream(request.method, url, params=query or None, headers=headers) as upstream,
        ):
            body = await _bounded_body(upstream)
    except httpx.TimeoutException:
        raise _RefusedError(504, "the Nova metadata service did not answer in time") from None
    except httpx.TransportError as exc:
        log.warning("metadata: the Nova metadata service is unreachable: %r", exc)
        raise _RefusedError(502, "the Nova metadata service is unreachable") from None
    content_type = upstream.headers.get("content-type")
    response = Response(body, status_code=upstream.status_code)
    if content_type:
        response.headers["content-type"] = content_type
    return response


async def _bounded_body(upstream: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in upstream.aiter_bytes():
        size += len(chunk)
        if size > MAX_NOVA_BODY:
            raise _RefusedError(502, "the Nova metadata service answered too much")
        chunks.append(chunk)
    return b"".join(chunks)


# -- the lookup over Neutron's API -----------------------------------------------------------------
class HttpInstanceLookup:
    """``InstanceLookup`` over Neutron's v2.0 API, ours or a real one; read-only.

    The client (``neutron_reader.neutron_client``) needs an admin's view: an
    instance's port belongs to its project.
    """

    def __init__(self, *, client: httpx.AsyncClient) -> None:
        self._client = client

    async def find(
        self, *, device_id: str, address: str, network_id: str | None = None
    ) -> InstanceView | None:
        params = [("device_id", device_id), ("fixed_ips", f"ip_address={address}")]
        if network_id is not None:
            params.append(("network_id", network_id))
        ports = _list_of(await self._get("/v2.0/ports", params), "ports")
        # checked again: a server that ignored a filter must not hand out another instance
        matching = sorted(
            (p for p in ports if _port_matches(p, device_id, address, network_id)),
            key=lambda p: str(p.get("id")),
        )
        if not matching:
            return None
        try:
            return await self._view(matching[0], address)
        except (KeyError, TypeError, ValueError) as exc:
            raise NetworkResponseError(f"a port or subnet is not Neutron's: {exc!r}") from exc

    async def _view(self, port: Mapping[str, Any], address: str) -> InstanceView:
        fixed_ips = tuple((str(ip["ip_address"]), str(ip["subnet_id"])) for ip in port["fixed_ips"])
        network_id = str(port["network_id"])
        network = await self._get(f"/v2.0/networks/{network_id}", [])
        mtu = network.get("network", {}).get("mtu") if isinstance(network, dict) else None
        subnet_ids = sorted({subnet_id for _, subnet_id in fixed_ips})
        subnets = _list_of(
            await self._get("/v2.0/subnets", [("id", s) for s in subnet_ids]), "subnets"
        )
        floating = _list_of(
            await self._get("/v2.0/floatingips", [("port_id", str(port["id"]))]), "floatingips"
        )
        return InstanceView(
            device_id=str(port["device_id"]),
            port_id=str(port["id"]),
            name=str(port.get("name") or ""),
            dns_name=str(port.get("dns_name") or ""),
            project_id=str(port.get("project_id") or port.get("tenant_id") or ""),
            mac_address=str(port["mac_address"]),
            network_id=network_id,
            address=address,
            fixed_ips=fixed_ips,
            subnets=tuple(_subnet_view(s) for s in subnets if s.get("id") in subnet_ids),
            mtu=mtu if isinstance(mtu, int) else None,
            floating_ip=_floating_ip(floating, address),
        )

    async def _get(self, url: str, params: list[tuple[str, str]]) -> Any:
        try:
            response = await self._client.get(url, params=tuple(params))
        except httpx.TransportError as exc:
            raise NetworkUnavailableError(
                f"the network API did not answer GET {url}: {exc!r}"
            ) from exc
        status = response.status_code
        if status >= 500 or status == 429:
            raise NetworkUnavailableError(f"GET {url}: the network API answered {status}")
        if status != 200:
            raise NetworkResponseError(f"GET {url}: the network API answered {status}")
        try:
            return response.json()
        except ValueError as exc:
            raise NetworkResponseError(f"GET {url}: the answer is not JSON") from exc


def _list_of(body: Any, key: str) -> list[Mapping[str, Any]]:
    items = body.get(key) if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise NetworkResponseError(f'the network API\'s answer has no "{key}" list of objects')
    return items


def _port_matches(
    port: Mapping[str, Any], device_id: str, address: str, network_id: str | None
) -> bool:
    fixed_ips = port.get("fixed_ips")
    if port.get("device_id") != device_id or not isinstance(fixed_ips, list):
        return False
    if network_id is not None and port.get("network_id") != network_id:
        return False
    return any(isinstance(ip, dict) and _same_ip(ip.get("ip_address"), address) for ip in fixed_ips)


def _same_ip(value: object, address: str) -> bool:
    try:
        return isinstance(value, str) and ipaddress.ip_address(value) == ipaddress.ip_address(
            address
        )
    except ValueError:
        return False


def _subnet_view(subnet: Mapping[str, Any]) -> SubnetView:
    routes = subnet.get("host_routes") or []
    return SubnetView(
        subnet_id=str(subnet["id"]),
        cidr=str(subnet["cidr"]),
        ip_version=int(subnet["ip_version"]),
        gateway_ip=subnet.get("gateway_ip") or None,
        enable_dhcp=bool(subnet.get("enable_dhcp", True)),
        ipv6_address_mode=subnet.get("ipv6_address_mode") or None,
        dns_nameservers=tuple(str(s) for s in subnet.get("dns_nameservers") or ()),
        host_routes=tuple((str(r["destination"]), str(r["nexthop"])) for r in routes),
    )


def _floating_ip(floating_ips: list[Mapping[str, Any]], address: str) -> str | None:
    for fip in floating_ips:
        if _same_ip(fip.get("fixed_ip_address"), address) and fip.get("floating_ip_address"):
            return str(fip["floating_ip_address"])
    return None

"""A client of the appliance agent's control socket: which namespaces the agent serves.

The agent (``astara appliance serve``) listens on a root-only Unix socket
(``/run/astara/appliance.sock`` by default) and answers::

    GET    /appliances            -> {"appliances": [{"netns", "address", "port"}, ...]}
    PUT    /appliances/{netns}    body {"listen": "<address>"} (optional) -> the entry
    DELETE /appliances/{netns}    -> 204; stops the appliance's dnsmasq/bird, drops its state

Errors come as ``{"error": {"code", "message"}}``. This is the protocol
``astara appliance add|remove|list`` speaks; it is repeated here (not
imported) because providers sit below the appliance in the layers.

Failures become provider errors: no agent on the socket, or a 5xx, is
``ProviderTemporaryError``; a 409 (cannot listen yet) too; 404 on add (no
such namespace) is ``ProviderNotFoundError``; any other 4xx is
``ProviderPermanentError``.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import httpx

from astara.providers.base import (
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderTemporaryError,
)
from astara.settings import DEFAULT_CONTROL_SOCKET


@dataclass(frozen=True)
class ServedAppliance:
    """One namespace the agent serves, and where its API listens."""

    netns: str
    address: IPv4Address | IPv6Address
    port: int


def _served(entry: Any) -> ServedAppliance:
    try:
        return ServedAppliance(
            str(entry["netns"]), ip_address(entry["address"]), int(entry["port"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderTemporaryError(f"the agent answered an unreadable entry {entry!r}") from exc


class AgentControl:
    """Add, remove and list the appliances of the agent listening on ``socket``."""

    def __init__(self, socket: Path = DEFAULT_CONTROL_SOCKET, *, timeout: float = 30.0) -> None:
        self.socket = socket
        self.timeout = timeout

    async def _request(
        self, method: str, path: str, body: dict[str, str] | None = None
    ) -> httpx.Response:
        # plain HTTP over a Unix socket: no TLS, so no default SSL context (loading the CA
        # store cost ~5 ms of CPU per request, a tenth of a re-adoption's time per appliance)
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket), verify=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://agent", timeout=self.timeout
        ) as client:
            try:
                return await client.request(method, path, json=body)
            except httpx.TransportError as exc:
                raise ProviderTemporaryError(
                    f"no appliance agent answers on {self.socket}: {exc}"
                ) from exc

    @staticmethod
    def _message(response: httpx.Response) -> str:
        try:
            return str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            return response.text or response.reason_phrase

    def _check(self, response: httpx.Response, what: str) -> None:
        if not response.is_error:
            return
        reason = f"{what}: the agent answered {response.status_code}: {self._message(response)}"
        if response.status_code == 404:
            raise ProviderNotFoundError(reason)
        if response.status_code >= 500 or response.status_code in (408, 409, 429):
            raise ProviderTemporaryError(reason)
        raise ProviderPermanentError(reason)

    async def add(
        self, *, netns: str, listen: IPv4Address | IPv6Address | None = None
    ) -> ServedAppliance:
        """Serve ``netns`` (on ``listen``, else ``ge0``'s first global address); idempotent."""
        body = {"listen": str(listen)} if listen is not None else {}
        response = await self._request("PUT", f"/appliances/{netns}", body)
        self._check(response, f"serve {netns}")
        return _served(response.json())

    async def remove(self, *, netns: str) -> None:
        """Stop serving ``netns`` and stop its services; one not served is not an error."""
        response = await self._request("DELETE", f"/appliances/{netns}")
        if response.status_code != 404:
            self._check(response, f"stop serving {netns}")

    async def list(self) -> builtins.list[ServedAppliance]:
        """The namespaces the agent serves now."""
        response = await self._request("GET", "/appliances")
        self._check(response, "list the served appliances")
        try:
            entries = response.json()["appliances"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderTemporaryError(f"the agent answered an unreadable list: {exc}") from exc
        return [_served(entry) for entry in entries]

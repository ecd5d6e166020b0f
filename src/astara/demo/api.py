"""The Neutron v2.0 API as the demo uses it: plain httpx, one project per client.

The demo sits below ``astara.cli`` in the layers, so it does not use the
CLI's ``netclient``; this is the few calls it needs. No-auth mode: the
project travels as ``X-Project-Id``. Every API error becomes a ``DemoError``
with Neutron's message.
"""

from __future__ import annotations

from typing import Any

import httpx

Resource = dict[str, Any]

#: collection -> the resource's name in bodies
NAMES = {
    "networks": "network",
    "subnets": "subnet",
    "ports": "port",
    "routers": "router",
    "floatingips": "floatingip",
}


class DemoError(Exception):
    """The demo cannot go on; ``str()`` is the one line to show."""


class Api:
    """One project's view of the network API at ``url``."""

    def __init__(self, url: str, project: str | None = None) -> None:
        self.url = url
        headers = {"Accept": "application/json"}
        if project:
            headers["X-Project-Id"] = project
        self._http = httpx.Client(base_url=url, headers=headers, timeout=30)

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, body: Resource | None = None, params: Any = None) -> Any:
        try:
            response = self._http.request(method, f"/v2.0/{path}", json=body, params=params)
        except httpx.TransportError as exc:
            raise DemoError(f"the network API at {self.url} did not answer: {exc}") from None
        if response.is_error:
            try:
                message = response.json()["NeutronError"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text.strip() or response.reason_phrase
            raise DemoError(f"{method} /v2.0/{path}: {response.status_code} {message}")
        return response.json() if response.content else None

    def create(self, collection: str, **body: Any) -> Resource:
        answer = self.call("POST", collection, {NAMES[collection]: body})
        made: Resource = answer[NAMES[collection]]
        return made

    def get(self, collection: str, resource_id: str) -> Resource:
        found: Resource = self.call("GET", f"{collection}/{resource_id}")[NAMES[collection]]
        return found

    def list(self, collection: str, **filters: str) -> list[Resource]:
        found: list[Resource] = self.call("GET", collection, params=filters)[collection]
        return found

    def delete(self, collection: str, resource_id: str) -> None:
        self.call("DELETE", f"{collection}/{resource_id}")


def answers(url: str) -> bool:
    """Whether a network API answers at ``url``."""
    try:
        return httpx.get(f"{url}/v2.0/networks", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False

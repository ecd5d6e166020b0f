"""A small typed client of the Neutron v2.0 API, for the ``astara`` resource commands.

It speaks plain HTTP to whatever serves Neutron's URLs (``astara network-api``
or a real Neutron in no-auth mode): the base URL comes from ``--url``, else
``ASTARA_URL``, else the network API's default address; ``--project`` is sent
as ``X-Project-Id``. Every failure becomes a ``CommandError`` whose text is
the one line to show: Neutron's ``NeutronError.message``, or a plain
sentence when the API cannot be reached.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from astara.settings import NetworkSettings

log = logging.getLogger(__name__)

Resource = dict[str, Any]
#: a list filter: ``{"name": "public"}`` or ``{"network_id": ["a", "b"]}``
Filters = Mapping[str, str | Sequence[str]]

DEFAULT_URL = f"http://{NetworkSettings.host}:{NetworkSettings.port}"

#: collection in URLs -> resource name in bodies, as Neutron spells them
RESOURCE_NAMES = {
    "networks": "network",
    "subnets": "subnet",
    "ports": "port",
    "routers": "router",
    "floatingips": "floatingip",
    "security_groups": "security_group",
    "security_group_rules": "security_group_rule",
}


class CommandError(Exception):
    """A command that cannot go on; ``str()`` is the one line to show the user."""


class ApiError(CommandError):
    """The API answered with an error: its status, Neutron type and message."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_


class UnreachableError(CommandError):
    """Nothing answered at the base URL."""


def resolve_url(given: str | None) -> str:
    """``--url``, else ``$ASTARA_URL``, else the default; without a trailing ``/`` or ``/v2.0``."""
    url = (given or os.environ.get("ASTARA_URL") or DEFAULT_URL).rstrip("/")
    return url.removesuffix("/v2.0")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class NetworkClient:
    """Neutron's collections over one HTTP connection; use as a context manager."""

    def __init__(
        self,
        url: str,
        *,
        project: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        headers = {"Accept": "application/json"}
        if project:
            headers["X-Project-Id"] = project
        self._http = httpx.Client(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> NetworkClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- HTTP ----------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        body: Resource | None = None,
        params: Filters | None = None,
    ) -> Any:
        """One call to ``/v2.0/<path>``: the decoded JSON answer (None when empty)."""
        try:
            response = self._http.request(
                method, f"/v2.0/{path}", json=body, params=_params(params)
            )
        except httpx.ConnectError:
            raise UnreachableError(
                f"cannot reach the network API at {self.url} — "
                "is `astara network-api` (or `astara up`) running?"
            ) from None
        except httpx.TransportError as exc:
            raise UnreachableError(f"the network API at {self.url} did not answer: {exc}") from None
        log.debug("%s %s -> %d", method, response.url, response.status_code)
        if response.is_error:
            raise _api_error(response)
        return response.json() if response.content else None

    # -- collections ---------------------------------------------------------------
    def list_resources(self, collection: str, filters: Filters | None = None) -> list[Resource]:
        found: list[Resource] = self.request("GET", collection, params=filters)[collection]
        return found

    def get(self, collection: str, resource_id: str) -> Resource:
        answer = self.request("GET", f"{collection}/{quote(resource_id, safe='')}")
        return _unwrap(collection, answer)

    def create(self, collection: str, body: Resource) -> Resource:
        answer = self.request("POST", collection, body={RESOURCE_NAMES[collection]: body})
        return _unwrap(collection, answer)

    def update(self, collection: str, resource_id: str, body: Resource) -> Resource:
        answer = self.request(
            "PUT",
            f"{collection}/{quote(resource_id, safe='')}",
            body={RESOURCE_NAMES[collection]: body},
        )
        return _unwrap(collection, answer)

    def delete(self, collection: str, resource_id: str) -> None:
        self.request("DELETE", f"{collection}/{quote(resource_id, safe='')}")

    def action(self, collection: str, resource_id: str, action: str, body: Resource) -> Resource:
        """A member action, as ``PUT /v2.0/routers/{id}/add_router_interface``: its raw answer."""
        answer: Resource = self.request(
            "PUT", f"{collection}/{quote(resource_id, safe='')}/{action}", body=body
        )
        return answer

    # -- names ---------------------------------------------------------------------
    def find(self, collection: str, ref: str, *, key: str = "name", label: str = "") -> Resource:
        """The one resource whose id, or ``key`` (a name), is ``ref``; else a clear error."""
        label = label or RESOURCE_NAMES[collection].replace("_", " ")
        if _is_uuid(ref):
            try:
                return self.get(collection, ref)
            except ApiError as exc:
                if exc.status != 404:
                    raise
        matches = self.list_resources(collection, {key: ref})
        if len(matches) == 1:
            return matches[0]
        what = "name" if key == "name" else key.replace("_", " ")
        if not matches:
            raise CommandError(f"no {label} has the id or {what} {ref!r}")
        ids = ", ".join(m["id"] for m in matches)
        raise CommandError(
            f"{len(matches)} {label}s have the {what} {ref!r} ({ids}): give an id instead"
        )


def _params(filters: Filters | None) -> httpx.QueryParams:
    out: list[tuple[str, str | int | float | bool | None]] = []
    for key, value in (filters or {}).items():
        values = [value] if isinstance(value, str) else value
        out.extend((key, v) for v in values)
    return httpx.QueryParams(out)


def _unwrap(collection: str, answer: Any) -> Resource:
    resource: Resource = answer[RESOURCE_NAMES[collection]]
    return resource


def _api_error(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["NeutronError"]
        return ApiError(response.status_code, str(error["type"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        text = response.text.strip() or response.reason_phrase
        return ApiError(response.status_code, "HTTPError", f"HTTP {response.status_code}: {text}")

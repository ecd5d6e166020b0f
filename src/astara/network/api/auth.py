"""Who is calling: the request context, from no-auth headers or a Keystone token.

Every handler asks an ``Authenticator`` for the request's ``Context``; the
strategy is chosen by ``NetworkSettings.auth_strategy``:

- ``noauth`` (``NoAuth``, the embedded default), as Neutron's
  ``auth_strategy = noauth``: the project comes from ``X-Project-Id`` (or
  ``X-Tenant-Id``), else the configured default project; roles from
  ``X-Roles`` (comma-separated), and the caller is admin when a role is
  ``admin`` — or, without ``X-Roles``, when the deployment says every caller
  is (``admin_by_default``, the single-user embedded default).
- ``keystone`` (``keystone.KeystoneAuthenticator``): ``X-Auth-Token``
  validated against Keystone v3 before routing; identity headers are ignored.

``context`` never does I/O, so sync handlers (in the thread pool) and async
ones (on the event loop) call it alike.
"""

from __future__ import annotations

import re
import uuid
from typing import Protocol

from fastapi import Request

from astara.network.context import Context
from astara.network.errors import BadRequest

_PROJECT = re.compile(r"^[A-Za-z0-9_.\-]{1,255}$")


class Authenticator(Protocol):
    """The request's caller: a ``Context``, or a ``NeutronError`` (401, 400…) raised."""

    def context(self, request: Request) -> Context: ...


def request_id(request: Request) -> str:
    """The caller's ``X-OpenStack-Request-ID``, else a new one."""
    return request.headers.get("x-openstack-request-id") or f"req-{uuid.uuid4()}"


class NoAuth:
    """No-auth mode: the caller is whoever the headers say."""

    def __init__(self, *, default_project: str, admin_by_default: bool) -> None:
        self.default_project = default_project
        self.admin_by_default = admin_by_default

    def context(self, request: Request) -> Context:
        headers = request.headers
        project = headers.get("x-project-id") or headers.get("x-tenant-id") or self.default_project
        if not _PROJECT.match(project):
            raise BadRequest(f"Invalid project id {project!r} in X-Project-Id.")
        roles_header = headers.get("x-roles")
        roles: tuple[str, ...]
        if roles_header is None:
            roles = ("admin", "member", "reader") if self.admin_by_default else ("member", "reader")
        else:
            roles = tuple(r.strip() for r in roles_header.split(",") if r.strip())
        return Context(
            project_id=project,
            is_admin="admin" in roles,
            user_id=headers.get("x-user-id"),
            roles=roles,
            request_id=request_id(request),
        )

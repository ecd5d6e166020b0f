"""Who is calling: the request context, from no-auth headers (embedded default).

No-auth mode, as Neutron's ``auth_strategy = noauth``: the project comes from
``X-Project-Id`` (or ``X-Tenant-Id``), else the configured default project;
roles from ``X-Roles`` (comma-separated), and the caller is admin when a role
is ``admin`` — or, without ``X-Roles``, when the deployment says every
caller is (``admin_by_default``, the single-user embedded default).
Keystone token validation is a later option; it will produce the same Context.
"""

from __future__ import annotations

import re
import uuid

from fastapi import Request

from astara.network.context import Context
from astara.network.errors import BadRequest

_PROJECT = re.compile(r"^[A-Za-z0-9_.\-]{1,255}$")


class Authenticator:
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
            request_id=headers.get("x-openstack-request-id") or f"req-{uuid.uuid4()}",
        )

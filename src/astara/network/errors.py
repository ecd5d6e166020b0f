"""The network service's errors, each with the HTTP status and Neutron type it answers with.

Services raise these; only ``api/`` turns them into responses, as Neutron's
``{"NeutronError": {"type", "message", "detail"}}`` body. The tree says what
the caller does next::

    NeutronError
    ├── BadRequest (400)        fix the request
    ├── NotAuthorized (403)     not yours to change
    ├── NotFound (404)          re-read: it is gone, or not visible to you
    └── Conflict (409)          re-read: the state changed or is in use
        ├── InUse               delete what depends on it first
        └── ExhaustedError      free addresses or ids first
"""

from __future__ import annotations


class NeutronError(Exception):
    """Base: ``status`` is the HTTP code, ``type`` Neutron's exception name."""

    status = 500
    type = "NeutronError"

    def __init__(self, message: str, *, type: str | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        if type is not None:
            self.type = type
        self.detail = detail


class BadRequest(NeutronError):  # noqa: N818 -- Neutron's names
    status = 400
    type = "HTTPBadRequest"


class NotAuthorized(NeutronError):  # noqa: N818
    status = 403
    type = "HTTPForbidden"


class NotFound(NeutronError):  # noqa: N818
    status = 404
    type = "HTTPNotFound"

    @classmethod
    def of(cls, resource: str, resource_id: str) -> NotFound:
        """Neutron's wording: ``Port <id> could not be found.`` (type ``PortNotFound``)."""
        name = "".join(part.capitalize() for part in resource.split("_"))
        label = {"floatingip": "Floating IP", "security_group": "Security group"}.get(
            resource, name
        )
        return cls(f"{label} {resource_id} could not be found.", type=f"{name}NotFound")


class Conflict(NeutronError):  # noqa: N818
    status = 409
    type = "Conflict"


class InUse(Conflict):
    type = "InUse"


class ExhaustedError(Conflict):
    type = "IpAddressGenerationFailure"

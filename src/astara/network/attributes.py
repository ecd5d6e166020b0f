"""Request bodies: which attributes each resource takes, converted and checked.

A resource declares its attributes as ``Attr`` values (Neutron's attribute
map, written as data): whether a create (POST) or an update (PUT) may set it,
whether it is required, admin-only, and a converter that turns the JSON value
into the stored value or raises BadRequest naming the attribute. ``parse``
refuses unknown attributes, so a typo never passes silently.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from astara.network.errors import BadRequest, NotAuthorized

Converter = Callable[[Any], Any]
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def invalid(name: str, value: Any, reason: str) -> BadRequest:
    return BadRequest(f"Invalid input for {name}. Reason: {reason}", type="HTTPBadRequest")


@dataclass(frozen=True)
class Attr:
    name: str
    convert: Converter
    post: bool = True
    put: bool = True
    required: bool = False
    admin_only: bool = False
    #: None in the body means "unset" and is passed through (e.g. gateway_ip)
    nullable: bool = False


def parse(
    resource: str,
    attrs: Sequence[Attr],
    document: Any,
    *,
    create: bool,
    is_admin: bool,
) -> dict[str, Any]:
    """Validate ``{"<resource>": {...}}``; return the converted attributes given."""
    if not isinstance(document, dict) or resource not in document:
        raise BadRequest(f"Resource body required: expected an object with key '{resource}'.")
    if len(document) != 1:
        extra = sorted(k for k in document if k != resource)
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(extra)}'")
    body = document[resource]
    if not isinstance(body, dict):
        raise BadRequest(f"Invalid input: '{resource}' must be an object.")
    known = {a.name: a for a in attrs}
    unknown = sorted(k for k in body if k not in known)
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    out: dict[str, Any] = {}
    for name, value in body.items():
        attr = known[name]
        if not (attr.post if create else attr.put):
            verb = "create" if create else "update"
            raise BadRequest(f"Attribute '{name}' not allowed in {verb.upper()}")
        if attr.admin_only and not is_admin:
            raise NotAuthorized(
                f"(rule:{'create' if create else 'update'}_{resource}:{name}) is disallowed by policy",
                type="PolicyNotAuthorized",
            )
        out[name] = None if value is None and attr.nullable else attr.convert(value)
    if create:
        missing = [a.name for a in attrs if a.required and a.name not in out]
        if missing:
            raise BadRequest(
                f"Failed to parse request. Required attribute '{missing[0]}' not specified"
            )
    return out


# -- converters: each checks and converts one JSON value ---------------------------


def string(name: str, max_length: int = 255) -> Converter:
    def convert(value: Any) -> str:
        if not isinstance(value, str):
            raise invalid(name, value, f"'{value}' is not a valid string")
        if len(value) > max_length:
            raise invalid(name, value, f"'{value}' exceeds maximum length of {max_length}")
        return value

    return convert


def boolean(name: str) -> Converter:
    def convert(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise invalid(name, value, f"'{value}' cannot be converted to boolean")

    return convert


def integer(name: str, low: int | None = None, high: int | None = None) -> Converter:
    def convert(value: Any) -> int:
        if isinstance(value, bool):
            raise invalid(name, value, f"'{value}' is not an integer")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise invalid(name, value, f"'{value}' is not an integer") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise invalid(name, value, f"'{number}' is not in range {low} through {high}")
        return number

    return convert


def identifier(name: str) -> Converter:
    def convert(value: Any) -> str:
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise invalid(name, value, f"'{value}' is not a valid UUID") from None

    return convert


def one_of(name: str, *choices: str | None) -> Converter:
    def convert(value: Any) -> Any:
        if value not in choices:
            allowed = ", ".join(str(c) for c in choices)
            raise invalid(name, value, f"'{value}' is not in [{allowed}]")
        return value

    return convert


def mac_address(name: str) -> Converter:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or not _MAC.match(value):
            raise invalid(name, value, f"'{value}' is not a valid MAC address")
        return value.lower()

    return convert


def list_of(name: str, item: Converter) -> Converter:
    def convert(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise invalid(name, value, f"'{value}' is not a list")
        return [item(v) for v in value]

    return convert


def anything(name: str) -> Converter:
    def convert(value: Any) -> Any:
        return value

    return convert


def dict_with(name: str, keys: set[str], required: set[str]) -> Converter:
    """A JSON object holding only ``keys`` and at least ``required`` (values checked later)."""

    def convert(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise invalid(name, value, f"'{value}' is not a dictionary")
        extra = set(value) - keys
        if extra:
            raise invalid(name, value, f"Unrecognized keys {sorted(extra)}")
        if not required <= set(value):
            raise invalid(name, value, f"Missing keys {sorted(required - set(value))}")
        return dict(value)

    return convert


def tag_list(name: str) -> Converter:
    """Neutron's tags: strings of 1-255 characters without a comma or slash, deduplicated."""
    one = string(name, 255)

    def convert(value: Any) -> list[str]:
        if not isinstance(value, list):
            raise invalid(name, value, f"'{value}' is not a list")
        tags = [one(v) for v in value]
        for tag in tags:
            if not tag or "," in tag or "/" in tag:
                raise invalid(name, value, f"'{tag}' is not a valid tag")
        return list(dict.fromkeys(tags))

    return convert


STANDARD = (
    Attr("name", string("name")),
    Attr("description", string("description")),
    Attr("tenant_id", string("tenant_id"), put=False),
    Attr("project_id", string("project_id"), put=False),
    Attr("tags", tag_list("tags"), put=False),  # tag-creation; later changes use /tags
)

"""From a PUT body (parsed JSON) to a validated ConfigurationBody, reusing what did not change.

The API takes whole configurations, so on a big router almost every network
and floating IP of a push is one validated at the previous push. A network
whose JSON is equal to the one last applied (same ``network_id``), and a
floating IP whose JSON is equal to one last applied, reuse their validated
models; the others, and everything else, are validated as usual. The result
is the model a full validation would give, and errors name the same fields
(``configuration.networks.<i>.…``, ``configuration.floating_ips.<i>.…``).
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from astara.wire.appliance_v1 import ConfigurationBody, FloatingIP, Network

_NETWORK = TypeAdapter(Network)
_FLOATING_IP = TypeAdapter(FloatingIP)


class BodyInvalidError(Exception):
    """The body does not validate; ``fields`` lists each field and reason."""

    def __init__(self, fields: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{f['field']}: {f['reason']}" for f in fields))
        self.fields = fields


def _fields(exc: ValidationError, prefix: tuple[str | int, ...]) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in (*prefix, *err["loc"])) or "body", "reason": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _list_of(document: Any, key: str) -> list[Any] | None:
    configuration = document.get("configuration") if isinstance(document, dict) else None
    found = configuration.get(key) if isinstance(configuration, dict) else None
    return found if isinstance(found, list) else None


def _flat_key(raw: Any) -> frozenset[tuple[str, type, Any]] | None:
    """A floating IP's JSON as a hashable key (None if it is not a flat object)."""
    if not isinstance(raw, dict):
        return None
    try:
        return frozenset((k, type(v), v) for k, v in raw.items())
    except TypeError:  # a nested value: validation will refuse it
        return None


def parse_body(document: Any, previous: tuple[Any, ConfigurationBody] | None) -> ConfigurationBody:
    """Validate ``document``; ``previous`` is the last applied (document, model). Raises BodyInvalidError."""
    networks = _list_of(document, "networks")
    if networks is None or previous is None or _list_of(previous[0], "networks") is None:
        try:
            return ConfigurationBody.model_validate(document)
        except ValidationError as exc:
            raise BodyInvalidError(_fields(exc, ())) from exc
    applied = previous[1].configuration
    known_networks = {
        raw.get("network_id"): (raw, model)
        for raw, model in zip(
            _list_of(previous[0], "networks") or [], applied.networks, strict=True
        )
        if isinstance(raw, dict)
    }
    known_fips = {
        key: model
        for raw, model in zip(
            _list_of(previous[0], "floating_ips") or [], applied.floating_ips, strict=True
        )
        if (key := _flat_key(raw)) is not None
    }
    errors: list[dict[str, str]] = []
    validated: list[Network] = []
    for index, raw in enumerate(networks):
        hit = known_networks.get(raw.get("network_id")) if isinstance(raw, dict) else None
        if hit is not None and hit[0] == raw:
            validated.append(hit[1])
            continue
        try:
            validated.append(_NETWORK.validate_python(raw))
        except ValidationError as exc:
            errors += _fields(exc, ("configuration", "networks", index))
    floating = _list_of(document, "floating_ips")
    fips: list[FloatingIP] = []
    for index, raw in enumerate(floating or []):
        reused = known_fips.get(key) if (key := _flat_key(raw)) is not None else None
        if reused is not None:
            fips.append(reused)
            continue
        try:
            fips.append(_FLOATING_IP.validate_python(raw))
        except ValidationError as exc:
            errors += _fields(exc, ("configuration", "floating_ips", index))
    rest = {**document["configuration"], "networks": []}
    if floating is not None:
        rest["floating_ips"] = []
    try:
        body = ConfigurationBody.model_validate({**document, "configuration": rest})
    except ValidationError as exc:
        errors += _fields(exc, ())
    if errors:
        raise BodyInvalidError(errors)
    update: dict[str, Any] = {"networks": validated}
    if floating is not None:
        update["floating_ips"] = fips
    configuration = body.configuration.model_copy(update=update)
    return body.model_copy(update={"configuration": configuration})

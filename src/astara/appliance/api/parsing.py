"""From a PUT body (parsed JSON) to a validated ConfigurationBody, reusing what did not change.

The API takes whole configurations, so on a big router almost every network
of a push is the one validated at the previous push. A network whose JSON is
equal to the one last applied (same ``network_id``) reuses its validated
model; the others, and everything outside ``networks``, are validated as
usual. The result is the model a full validation would give, and errors name
the same fields (``configuration.networks.<i>.…``).
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from astara.wire.appliance_v1 import ConfigurationBody, Network

_NETWORK = TypeAdapter(Network)


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


def _networks_of(document: Any) -> list[Any] | None:
    configuration = document.get("configuration") if isinstance(document, dict) else None
    networks = configuration.get("networks") if isinstance(configuration, dict) else None
    return networks if isinstance(networks, list) else None


def parse_body(document: Any, previous: tuple[Any, ConfigurationBody] | None) -> ConfigurationBody:
    """Validate ``document``; ``previous`` is the last applied (document, model). Raises BodyInvalidError."""
    networks = _networks_of(document)
    old = _networks_of(previous[0]) if previous is not None else None
    if networks is None or old is None or previous is None:
        try:
            return ConfigurationBody.model_validate(document)
        except ValidationError as exc:
            raise BodyInvalidError(_fields(exc, ())) from exc
    known = {
        raw.get("network_id"): (raw, model)
        for raw, model in zip(old, previous[1].configuration.networks, strict=True)
        if isinstance(raw, dict)
    }
    validated: list[Network] = []
    errors: list[dict[str, str]] = []
    for index, raw in enumerate(networks):
        hit = known.get(raw.get("network_id")) if isinstance(raw, dict) else None
        if hit is not None and hit[0] == raw:
            validated.append(hit[1])
            continue
        try:
            validated.append(_NETWORK.validate_python(raw))
        except ValidationError as exc:
            errors += _fields(exc, ("configuration", "networks", index))
    shell = {**document, "configuration": {**document["configuration"], "networks": []}}
    try:
        body = ConfigurationBody.model_validate(shell)
    except ValidationError as exc:
        errors += _fields(exc, ())
    if errors:
        raise BodyInvalidError(errors)
    configuration = body.configuration.model_copy(update={"networks": validated})
    return body.model_copy(update={"configuration": configuration})

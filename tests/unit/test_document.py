"""The applied configuration's JSON: pieces reused, content equal to a full dump."""

from __future__ import annotations

import json

from astara.appliance.api.parsing import parse_body
from astara.appliance.document import ConfigDocument
from astara.wire.appliance_v1 import ConfigurationBody
from tests.unit.test_parsing import _document


def test_dump_equals_a_full_dump_across_changes() -> None:
    writer = ConfigDocument()
    document = _document()
    body = parse_body(document, None)
    assert json.loads(writer.dump(body)) == json.loads(body.model_dump_json())
    changed = _document()
    changed["configuration"]["floating_ips"].pop()
    changed["configuration"]["networks"][0]["address_allocations"][0]["hostname"] = "other"
    changed["configuration"]["asn"] = 64512
    second = parse_body(changed, (document, body))
    assert json.loads(writer.dump(second)) == json.loads(second.model_dump_json())


def test_reused_models_are_not_serialised_again() -> None:
    writer = ConfigDocument()
    document = _document()
    body = parse_body(document, None)
    first = writer.dump(body)
    network = body.configuration.networks[1]
    # a reused model keeps its text: a change behind the writer's back would not show
    object.__setattr__(network, "network_id", "tampered")
    assert "tampered" not in writer.dump(body)
    assert json.loads(writer.dump(body)) == json.loads(first)


def test_an_empty_configuration() -> None:
    body = ConfigurationBody.model_validate({"configuration": {"networks": []}})
    assert json.loads(ConfigDocument().dump(body)) == json.loads(body.model_dump_json())

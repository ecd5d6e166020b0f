"""Incremental parsing of PUT bodies gives what a full validation gives."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from astara.appliance.api.parsing import BodyInvalidError, parse_body
from astara.wire.appliance_v1 import ConfigurationBody


def _document() -> dict[str, Any]:
    def net(i: int) -> dict[str, Any]:
        return {
            "network_id": f"net-{i}",
            "network_type": "internal",
            "interface": {"ifname": f"ge{i + 2}", "addresses": [f"10.{i}.0.1/24"]},
            "address_allocations": [
                {
                    "hostname": f"vm{i}",
                    "mac_address": f"FA:16:3E:00:00:{i:02x}",
                    "ip_addresses": {f"10.{i}.0.10": True},
                    "device_id": f"d{i}",
                }
            ],
        }

    return {
        "configuration": {
            "tenant_id": "p",
            "networks": [net(i) for i in range(3)],
            "floating_ips": [
                {"floating_ip": "203.0.113.10", "fixed_ip": "10.0.0.10"},
                {"floating_ip": "203.0.113.11", "fixed_ip": "10.1.0.10"},
            ],
        }
    }


def _previous() -> tuple[dict[str, Any], ConfigurationBody]:
    document = _document()
    return document, ConfigurationBody.model_validate(document)


def test_unchanged_networks_reuse_their_models_and_the_result_equals_a_full_validation() -> None:
    previous = _previous()
    document = _document()
    document["configuration"]["networks"][1]["address_allocations"][0]["hostname"] = "renamed"
    body = parse_body(document, previous)
    assert body == ConfigurationBody.model_validate(document)
    assert body.configuration.networks[0] is previous[1].configuration.networks[0]
    assert body.configuration.networks[1] is not previous[1].configuration.networks[1]
    # normalisation is the model's, not the raw text's
    assert body.configuration.networks[0].address_allocations[0].mac_address == "fa:16:3e:00:00:00"
    assert json.loads(body.model_dump_json()) == json.loads(
        ConfigurationBody.model_validate(document).model_dump_json()
    )


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda d: d["configuration"]["networks"][2]["interface"].__setitem__("mtu", "big"),
            "configuration.networks.2.interface.mtu",
        ),
        (
            lambda d: d["configuration"]["networks"][0].__setitem__("bogus", 1),
            "configuration.networks.0.bogus",
        ),
        (lambda d: d["configuration"].__setitem__("asn", 0), "configuration.asn"),
        (
            lambda d: d["configuration"]["floating_ips"][1].__setitem__("fixed_ip", "10.1.0"),
            "configuration.floating_ips.1.fixed_ip",
        ),
        (
            lambda d: d["configuration"]["floating_ips"].append({"floating_ip": ["x"]}),
            "configuration.floating_ips.2.floating_ip",
        ),
        (
            lambda d: d["configuration"].__setitem__("floating_ips", "none"),
            "configuration.floating_ips",
        ),
        (lambda d: d.__setitem__("extra", 1), "extra"),
    ],
)
def test_errors_name_the_same_fields_as_a_full_validation(mutate: Any, field: str) -> None:
    document = copy.deepcopy(_document())
    mutate(document)
    with pytest.raises(BodyInvalidError) as caught:
        parse_body(document, _previous())
    assert field in [f["field"] for f in caught.value.fields]


def test_without_a_previous_document_everything_is_validated() -> None:
    with pytest.raises(BodyInvalidError) as caught:
        parse_body({"configuration": {"networks": "no"}}, None)
    assert caught.value.fields[0]["field"] == "configuration.networks"


def test_unchanged_floating_ips_reuse_their_models() -> None:
    previous = _previous()
    document = _document()
    fips = document["configuration"]["floating_ips"]
    fips.reverse()
    fips.append({"floating_ip": "203.0.113.12", "fixed_ip": "10.2.0.10"})
    body = parse_body(document, previous)
    assert body == ConfigurationBody.model_validate(document)
    old = previous[1].configuration.floating_ips
    assert body.configuration.floating_ips[0] is old[1]
    assert body.configuration.floating_ips[1] is old[0]
    assert str(body.configuration.floating_ips[2].floating_ip) == "203.0.113.12"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda d: d["configuration"]["floating_ips"][0].__setitem__("fixed_ip", 1),
            "configuration.floating_ips.0.fixed_ip",
        ),
        (
            lambda d: d["configuration"].__setitem__("default_v4_gateway", 3),
            "configuration.default_v4_gateway",
        ),
    ],
)
def test_addresses_must_be_written_as_text(mutate: Any, field: str) -> None:
    """pydantic alone would read the number 1 as 0.0.0.1: a wrong type, refused."""
    document = copy.deepcopy(_document())
    mutate(document)
    with pytest.raises(BodyInvalidError) as caught:
        parse_body(document, None)
    assert field in [f["field"] for f in caught.value.fields]

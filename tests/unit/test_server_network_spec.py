"""``astara server``'s view of a network, as ``astara network-api`` or a real Neutron shows it."""

from __future__ import annotations

import pytest

from astara.cli.netclient import CommandError
from astara.cli.server import network_spec
from astara.fabric import NetworkType


def test_a_real_neutrons_tenant_and_flat_networks() -> None:
    vxlan = network_spec(
        {
            "id": "n1",
            "mtu": 1450,
            "provider:network_type": "vxlan",
            "provider:physical_network": None,
            "provider:segmentation_id": 1564,
        }
    )
    assert (vxlan.network_type, vxlan.segmentation_id, vxlan.mtu) == (NetworkType.VXLAN, 1564, 1450)
    flat = network_spec(
        {
            "id": "n2",
            "mtu": 1500,
            "provider:network_type": "flat",
            "provider:physical_network": "physnet1",
            "provider:segmentation_id": None,
        }
    )
    assert (flat.network_type, flat.physical_network) == (NetworkType.FLAT, "physnet1")


def test_a_network_seen_without_its_segmentation_is_refused_not_taken_for_local() -> None:
    with pytest.raises(CommandError, match="visible to admins only"):
        network_spec({"id": "n3", "mtu": 1450})


def test_a_type_this_host_cannot_carry_is_refused() -> None:
    with pytest.raises(CommandError, match="geneve"):
        network_spec({"id": "n4", "provider:network_type": "geneve"})

"""Smoke test: the unchanged ``openstack`` CLI (python-openstackclient) against the service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.component.conftest import NetworkApi

OPENSTACK = Path(sys.executable).with_name("openstack")


def test_the_openstack_cli_builds_a_routed_network_with_a_floating_ip(
    network_api: NetworkApi,
) -> None:
    env = {
        **os.environ,
        "OS_AUTH_TYPE": "none",
        "OS_ENDPOINT": network_api.url,
        "OS_NETWORK_ENDPOINT_OVERRIDE": network_api.url + "/",
    }

    def openstack(*argv: str) -> str:
        done = subprocess.run(
            [str(OPENSTACK), *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"openstack {' '.join(argv)}: {done.stderr}"
        return done.stdout.strip()

    value = ("-f", "value", "-c", "id")
    openstack(
        "network", "create", "public", "--external", "--provider-network-type", "flat", *value
    )
    openstack(
        "subnet",
        "create",
        "pub",
        "--network",
        "public",
        "--subnet-range",
        "203.0.113.0/24",
        "--no-dhcp",
        *value,
    )
    openstack("network", "create", "private", *value)
    openstack(
        "subnet", "create", "priv", "--network", "private", "--subnet-range", "10.0.0.0/24", *value
    )
    router = openstack("router", "create", "r1", *value)
    openstack("router", "set", "r1", "--external-gateway", "public")
    openstack("router", "add", "subnet", "r1", "priv")
    port = openstack("port", "create", "vm", "--network", "private", *value)
    fip = openstack("floating", "ip", "create", "public", *value)
    openstack("floating", "ip", "set", "--port", "vm", fip)
    shown = httpx.get(f"{network_api.url}/v2.0/floatingips/{fip}").json()["floatingip"]
    assert (shown["port_id"], shown["router_id"], shown["fixed_ip_address"]) == (
        port,
        router,
        "10.0.0.2",
    )
    gateway = httpx.get(f"{network_api.url}/v2.0/routers/{router}").json()["router"][
        "external_gateway_info"
    ]
    assert gateway["external_fixed_ips"][0]["ip_address"] == "203.0.113.2"

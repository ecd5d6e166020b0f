"""The orchestrator's metadata service against the real network API (SQLite and PostgreSQL).

A topology is made through openstacksdk: an external network, a router, a
tenant network with a DHCP subnet, two instance ports (device_id and name
set) and a floating IP on the first. The metadata app is driven through
httpx's ASGITransport with the TCP peer set to an appliance's (or another)
address, and its ``HttpInstanceLookup`` asks the network API as admin.
Proven: every self-answer (OpenStack's and EC2's, the 2009-04-04 alias,
listings), 404 for unknown paths and for a forged or unknown instance, 403 for
a non-appliance peer, 400 for missing headers, 503 when the network API is
down; in forward mode a fake Nova (uvicorn on loopback) sees the right HMAC
signature, instance, tenant and address headers and its answer is relayed;
Nova down gives 502.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from openstack.connection import Connection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from astara.orchestrator.metadata import (
    HttpInstanceLookup,
    InstanceLookup,
    NovaMetadata,
    create_metadata_app,
    sign_instance_id,
)
from astara.orchestrator.metadata_answers import InstanceView, SubnetView, network_data
from astara.orchestrator.neutron_reader import neutron_client, noauth_admin_headers
from tests.component.conftest import NetworkApi

APPLIANCE = "fd00::5"
VM_ID = "11111111-2222-3333-4444-555555555555"
OTHER_ID = "66666666-7777-8888-9999-000000000000"
SECRET = b"s3cret-shared"


@dataclass
class Topology:
    vm: Any  # the instance port with a floating IP
    other: Any  # another instance's port, no floating IP
    network_id: str
    subnet_id: str
    floating_ip: str
    project_id: str

    @property
    def vm_ip(self) -> str:
        return str(self.vm.fixed_ips[0]["ip_address"])

    @property
    def other_ip(self) -> str:
        return str(self.other.fixed_ips[0]["ip_address"])


@pytest.fixture
def topology(sdk: Connection) -> Topology:
    net = sdk.network
    public = net.create_network(
        name="public", is_router_external=True, provider_network_type="flat"
    )
    net.create_subnet(
        network_id=public.id, ip_version=4, cidr="203.0.113.0/24", is_dhcp_enabled=False
    )
    private = net.create_network(name="private")
    subnet = net.create_subnet(
        network_id=private.id, ip_version=4, cidr="10.0.0.0/24", dns_nameservers=["192.0.2.53"]
    )
    router = net.create_router(name="r1", external_gateway_info={"network_id": public.id})
    net.add_interface_to_router(router, subnet_id=subnet.id)
    vm = net.create_port(
        network_id=private.id, name="Web Server 1", device_id=VM_ID, device_owner="compute:nova"
    )
    other = net.create_port(
        network_id=private.id, name="db", device_id=OTHER_ID, device_owner="compute:nova"
    )
    fip = net.create_ip(floating_network_id=public.id)
    fip = net.update_ip(fip, port_id=vm.id)
    return Topology(vm, other, private.id, subnet.id, fip.floating_ip_address, vm.project_id)


@pytest.fixture
async def lookup(network_api: NetworkApi) -> AsyncIterator[HttpInstanceLookup]:
    client = neutron_client(url=network_api.url, headers=noauth_admin_headers())
    yield HttpInstanceLookup(client=client)
    await client.aclose()


def _client(app: Starlette, peer: str = APPLIANCE) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://orchestrator:9697")


def _self_answering(lookup: InstanceLookup) -> Starlette:
    return create_metadata_app(
        lookup=lookup, appliances=lambda a: a == APPLIANCE, nova=None, secret=None
    )


def _headers(t: Topology, *, instance: str = VM_ID, address: str | None = None) -> dict[str, str]:
    return {
        "X-Forwarded-For": address or t.vm_ip,
        "X-Instance-ID": instance,
        "X-Tenant-ID": t.project_id,
        "X-Neutron-Network-ID": t.network_id,
    }


# -- self-answer mode ------------------------------------------------------------------------------
async def test_openstack_answers(topology: Topology, lookup: HttpInstanceLookup) -> None:
    t = topology
    async with _client(_self_answering(lookup)) as client:
        listing = await client.get("/openstack", headers=_headers(t))
        assert (listing.status_code, listing.text) == (200, "latest")
        files = await client.get("/openstack/latest/", headers=_headers(t))
        assert files.text.split("\n") == ["meta_data.json", "network_data.json"]
        meta = await client.get("/openstack/latest/meta_data.json", headers=_headers(t))
        assert meta.headers["content-type"] == "application/json"
        assert meta.json() == {
            "uuid": VM_ID,
            "name": "Web Server 1",
            "hostname": "web-server-1",
            "project_id": t.project_id,
            "availability_zone": "nova",
            "launch_index": 0,
            "public_keys": {},
            "keys": [],
            "meta": {},
            "devices": [],
        }
        network = await client.get("/openstack/latest/network_data.json", headers=_headers(t))
    link = "tap" + t.vm.id[:11]
    data = network.json()
    assert data["links"] == [
        {
            "id": link,
            "vif_id": t.vm.id,
            "type": "phy",
            "ethernet_mac_address": t.vm.mac_address,
            "mtu": data["links"][0]["mtu"],
        }
    ]
    assert isinstance(data["links"][0]["mtu"], int)
    assert data["networks"] == [
        {"id": "network0", "type": "ipv4_dhcp", "link": link, "network_id": t.network_id}
    ]
    assert data["services"] == [{"type": "dns", "address": "192.0.2.53"}]


async def test_ec2_answers(topology: Topology, lookup: HttpInstanceLookup) -> None:
    t = topology
    expected = {
        "instance-id": VM_ID,
        "hostname": "web-server-1",
        "local-hostname": "web-server-1",
        "local-ipv4": t.vm_ip,
        "public-ipv4": t.floating_ip,
    }
    async with _client(_self_answering(lookup)) as client:
        root = await client.get("/", headers=_headers(t))
        assert root.text.split("\n") == ["2009-04-04", "latest"]
        for version in ("latest", "2009-04-04"):
            top = await client.get(f"/{version}", headers=_headers(t))
            assert top.text == "meta-data/"
            keys = await client.get(f"/{version}/meta-data/", headers=_headers(t))
            assert keys.status_code == 200 and keys.text.split("\n") == sorted(expected)
            for key, value in expected.items():
                got = await client.get(f"/{version}/meta-data/{key}", headers=_headers(t))
                assert (got.status_code, got.text) == (200, value), key
                assert got.headers["content-type"].startswith("text/plain")
        for unknown in ("/latest/meta-data/ami-id", "/latest/user-data", "/1999-01-01/x", "/x"):
            assert (await client.get(unknown, headers=_headers(t))).status_code == 404
        missing = "/openstack/latest/user_data"
        assert (await client.get(missing, headers=_headers(t))).status_code == 404


async def test_no_floating_ip_no_public_ipv4(
    topology: Topology, lookup: HttpInstanceLookup
) -> None:
    t = topology
    headers = _headers(t, instance=OTHER_ID, address=t.other_ip)
    async with _client(_self_answering(lookup)) as client:
        public = await client.get("/latest/meta-data/public-ipv4", headers=headers)
        keys = await client.get("/latest/meta-data", headers=headers)
        own = await client.get("/latest/meta-data/instance-id", headers=headers)
    assert public.status_code == 404
    assert "public-ipv4" not in keys.text.split("\n")
    assert own.text == OTHER_ID


async def test_a_second_router_port_on_the_network_names_it_with_a_suffix(
    topology: Topology, lookup: HttpInstanceLookup
) -> None:
    """A dual-stack network added as two interfaces: the appliance's id for the second
    port's network is "<network>:<port>" (router_driver), and it is the same network."""
    t = topology
    headers = {**_headers(t), "X-Neutron-Network-ID": f"{t.network_id}:some-router-port"}
    async with _client(_self_answering(lookup)) as client:
        got = await client.get("/latest/meta-data/instance-id", headers=headers)
    assert (got.status_code, got.text) == (200, VM_ID)


async def test_forged_or_unknown_instance_is_404(
    topology: Topology, lookup: HttpInstanceLookup
) -> None:
    t = topology
    forged = [
        _headers(t, instance=OTHER_ID),  # another instance's id with this instance's address
        _headers(t, instance=VM_ID, address=t.other_ip),  # this id from another's address
        _headers(t, instance="no-such-instance"),
        {**_headers(t), "X-Neutron-Network-ID": "another-network"},
    ]
    async with _client(_self_answering(lookup)) as client:
        for headers in forged:
            got = await client.get("/openstack/latest/meta_data.json", headers=headers)
            assert got.status_code == 404, headers
            assert VM_ID not in got.text and OTHER_ID not in got.text


async def test_only_appliances_with_identity_headers(
    topology: Topology, lookup: HttpInstanceLookup
) -> None:
    t = topology
    app = _self_answering(lookup)
    async with _client(app, peer="10.0.0.99") as client:
        refused = await client.get("/latest/meta-data/instance-id", headers=_headers(t))
    assert refused.status_code == 403 and VM_ID not in refused.text
    async with _client(app) as client:
        for dropped in ("X-Forwarded-For", "X-Instance-ID"):
            headers = {k: v for k, v in _headers(t).items() if k != dropped}
            got = await client.get("/latest/meta-data/instance-id", headers=headers)
            assert got.status_code == 400, dropped
        bad = {**_headers(t), "X-Forwarded-For": "not-an-address"}
        assert (await client.get("/latest/meta-data/", headers=bad)).status_code == 400
        posted = await client.post("/openstack/latest/password", headers=_headers(t))
        assert posted.status_code == 405


async def test_network_api_down_is_503() -> None:
    client = neutron_client(url=f"http://127.0.0.1:{_free_port()}", timeout=2)
    headers = {"X-Forwarded-For": "10.0.0.5", "X-Instance-ID": VM_ID}
    try:
        async with _client(_self_answering(HttpInstanceLookup(client=client))) as metadata:
            got = await metadata.get("/latest/meta-data/instance-id", headers=headers)
    finally:
        await client.aclose()
    assert got.status_code == 503


# -- forward mode ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class FakeNova:
    url: str
    seen: list[tuple[str, str, dict[str, str]]]


@pytest.fixture
def fake_nova() -> Iterator[FakeNova]:
    """A Nova metadata service on loopback that checks the signature as Nova does."""
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def metadata(request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        seen.append((request.url.path, request.url.query, headers))
        instance = headers.get("x-instance-id", "")
        expected = hmac.new(SECRET, instance.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("x-instance-id-signature", "")):
            return Response("bad signature", status_code=403)
        if request.url.path.endswith("/missing"):
            return Response("no such thing", status_code=404, media_type="text/plain")
        return JSONResponse({"from": "nova", "uuid": instance, "path": request.url.path})

    app = Starlette(routes=[Route("/{path:path}", metadata)])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="fake-nova", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the fake Nova did not start")
        time.sleep(0.02)
    try:
        yield FakeNova(f"http://127.0.0.1:{port}", seen)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def test_forward_to_nova_signs_and_relays(
    topology: Topology, lookup: HttpInstanceLookup, fake_nova: FakeNova
) -> None:
    t = topology
    app = create_metadata_app(
        lookup=lookup,
        appliances=lambda a: a == APPLIANCE,
        nova=NovaMetadata(fake_nova.url),
        secret=SECRET,
    )
    headers = {**_headers(t), "X-Tenant-ID": "claimed-by-the-appliance"}
    async with _client(app) as client:
        got = await client.get("/openstack/latest/meta_data.json?x=1", headers=headers)
        missing = await client.get("/openstack/latest/missing", headers=headers)
        forged = await client.get(
            "/openstack/latest/meta_data.json", headers=_headers(t, instance=OTHER_ID)
        )
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    assert json.loads(got.content) == {
        "from": "nova",
        "uuid": VM_ID,
        "path": "/openstack/latest/meta_data.json",
    }
    assert (missing.status_code, missing.text) == (404, "no such thing")
    assert missing.headers["content-type"].startswith("text/plain")
    assert forged.status_code == 404
    assert len(fake_nova.seen) == 2  # the forged request never reached Nova
    path, query, sent = fake_nova.seen[0]
    assert (path, query) == ("/openstack/latest/meta_data.json", "x=1")
    assert sent["x-instance-id"] == VM_ID
    assert sent["x-tenant-id"] == t.project_id  # the port's project, not the header's
    assert sent["x-forwarded-for"] == t.vm_ip
    assert sent["x-instance-id-signature"] == sign_instance_id(SECRET, VM_ID)


async def test_nova_down_is_502(topology: Topology, lookup: HttpInstanceLookup) -> None:
    app = create_metadata_app(
        lookup=lookup,
        appliances=lambda a: a == APPLIANCE,
        nova=NovaMetadata(f"http://127.0.0.1:{_free_port()}", timeout=2),
        secret=SECRET,
    )
    async with _client(app) as client:
        got = await client.get("/openstack/latest/meta_data.json", headers=_headers(topology))
    assert got.status_code == 502 and "unreachable" in got.text


class _NoInstances:
    async def find(
        self, *, device_id: str, address: str, network_id: str | None = None
    ) -> InstanceView | None:
        return None


def test_forward_mode_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        create_metadata_app(
            lookup=_NoInstances(),
            appliances=lambda a: True,
            nova=NovaMetadata("http://127.0.0.1:8775"),
            secret=None,
        )


# -- the answers' content, without the network API -------------------------------------------------
def test_network_data_static_v4_and_v6() -> None:
    v4 = SubnetView(
        subnet_id="s4",
        cidr="192.0.2.0/24",
        ip_version=4,
        gateway_ip="192.0.2.1",
        enable_dhcp=False,
        dns_nameservers=("192.0.2.53",),
        host_routes=(("198.51.100.0/24", "192.0.2.254"),),
    )
    v6 = SubnetView(subnet_id="s6", cidr="2001:db8::/64", ip_version=6, ipv6_address_mode="slaac")
    view = InstanceView(
        device_id=VM_ID,
        port_id="0123456789abcdef",
        name="",
        project_id="p",
        mac_address="fa:16:3e:00:00:01",
        network_id="n",
        address="192.0.2.10",
        fixed_ips=(("192.0.2.10", "s4"), ("2001:db8::10", "s6"), ("203.0.113.9", "gone")),
        subnets=(v4, v6),
    )
    assert view.hostname == "host-192-0-2-10"
    data = network_data(view)
    assert data["links"] == [
        {
            "id": "tap0123456789a",
            "vif_id": "0123456789abcdef",
            "type": "phy",
            "ethernet_mac_address": "fa:16:3e:00:00:01",
        }
    ]
    assert data["networks"] == [
        {
            "id": "network0",
            "type": "ipv4",
            "link": "tap0123456789a",
            "network_id": "n",
            "ip_address": "192.0.2.10",
            "netmask": "255.255.255.0",
            "routes": [
                {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"},
                {"network": "198.51.100.0", "netmask": "255.255.255.0", "gateway": "192.0.2.254"},
            ],
            "services": [{"type": "dns", "address": "192.0.2.53"}],
        },
        {
            "id": "network1",
            "type": "ipv6_slaac",
            "link": "tap0123456789a",
            "network_id": "n",
            "ip_address": "2001:db8::10",
            "netmask": "ffff:ffff:ffff:ffff::",
            "routes": [],
            "services": [],
        },
    ]
    assert data["services"] == [{"type": "dns", "address": "192.0.2.53"}]


def test_signature_is_neutrons() -> None:
    expected = hmac.new(SECRET, VM_ID.encode(), hashlib.sha256).hexdigest()
    assert sign_instance_id(SECRET, VM_ID) == expected

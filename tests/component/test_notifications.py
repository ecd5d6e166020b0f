"""Contract: the network API emits what a real Neutron emits for the same operations.

The operations of the captured session (``shared/fixtures/neutron``: network,
subnet, port, router with gateway and interface, floating IP associate and
delete) run through openstacksdk; every notification is read off the bus,
decoded, and compared with the captured one of the same event type: the
envelope's keys, the payload's keys, and the keys of the resource in it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from openstack.connection import Connection

from astara.bus.embedded import EmbeddedSubscription
from astara.wire.neutron_events import EXCHANGE, ROUTING_KEY, Notification, decode_notification
from tests.component.conftest import NetworkApi
from tests.fixtures import NOTIFICATIONS

FIXTURES = NOTIFICATIONS


def _captured() -> dict[str, list[dict[str, Any]]]:
    if not FIXTURES.is_dir():
        pytest.fail(f"the captured Neutron notifications are missing: {FIXTURES}")
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(FIXTURES.glob("*.json")):
        envelope = json.loads(path.read_text())
        message = json.loads(envelope["oslo.message"])
        found.setdefault(message["event_type"], []).append(
            {"envelope": envelope, "message": message}
        )
    return found


class Recorder:
    def __init__(self, api: NetworkApi, subscription: EmbeddedSubscription) -> None:
        self.api, self.subscription = api, subscription
        self.seen: list[tuple[bytes, Notification]] = []

    def collect(self) -> list[Notification]:
        self.api.service.events.drain()  # type: ignore[attr-defined]

        async def take() -> list[bytes]:
            out = []
            while self.subscription.pending:
                out.append((await self.subscription.__anext__()).body)
            return out

        fresh = [(body, decode_notification(body)) for body in self.api.call(take())]
        self.seen += fresh
        return [n for _, n in fresh]


@pytest.fixture
def recorder(network_api: NetworkApi) -> Iterator[Recorder]:
    subscription = network_api.call(
        network_api.bus.subscribe(exchange=EXCHANGE, binding=ROUTING_KEY)
    )
    yield Recorder(network_api, subscription)
    network_api.call(subscription.close())


def _shape(body: bytes, note: Notification) -> frozenset[str]:
    """The keys of a notification: envelope, message, payload, and of the objects in it."""
    envelope = json.loads(body)
    keys = {f"envelope.{k}" for k in envelope}
    keys |= {f"message.{k}" for k in json.loads(envelope["oslo.message"])}
    for key, value in note.payload.items():
        keys.add(f"payload.{key}")
        if isinstance(value, dict):
            keys |= {f"payload.{key}.{k}" for k in value}
    return frozenset(keys)


def _session(sdk: Connection, recorder: Recorder, member: Connection) -> None:
    """The captured session's operations, in its order; the last ones as a member."""
    public = sdk.network.create_network(
        name="public", is_router_external=True, provider_network_type="flat"
    )
    sdk.network.create_subnet(
        network_id=public.id, ip_version=4, cidr="203.0.113.0/24", is_dhcp_enabled=False
    )
    private = sdk.network.create_network(name="private")
    subnet = sdk.network.create_subnet(
        network_id=private.id,
        ip_version=4,
        cidr="198.51.100.0/24",
        dns_nameservers=["198.51.100.53"],
    )
    router = sdk.network.create_router(name="router1")
    sdk.network.update_router(router, external_gateway_info={"network_id": public.id})
    sdk.network.add_interface_to_router(router, subnet_id=subnet.id)
    port = sdk.network.create_port(
        network_id=private.id,
        name="vm-port-1",
        device_owner="compute:nova",
        device_id="11111111-2222-3333-4444-555555555555",
    )
    fip = sdk.network.create_ip(floating_network_id=public.id)
    sdk.network.update_ip(fip, port_id=port.id)
    sdk.network.update_port(port, name="renamed")
    sdk.network.update_ip(fip, port_id=None)
    sdk.network.delete_ip(fip)
    sdk.network.remove_interface_from_router(router, subnet_id=subnet.id)
    sdk.network.delete_port(port)
    sdk.network.delete_router(router)
    member.network.create_network(name="a-net")
    member.network.create_router(name="a-router")
    recorder.collect()


def test_event_types_and_payload_shapes_match_a_real_neutron(
    sdk: Connection, sdk_as: Any, recorder: Recorder
) -> None:
    _session(sdk, recorder, sdk_as("proj-a"))
    ours: dict[str, list[tuple[bytes, Notification]]] = {}
    for body, note in recorder.seen:
        ours.setdefault(note.event_type, []).append((body, note))
    captured = {k: v for k, v in _captured().items() if not k.startswith("security_group")}
    missing = sorted(set(captured) - set(ours))
    assert not missing, f"events a real Neutron emits and we do not: {missing}"
    differences = {}
    for event_type, samples in captured.items():
        shapes = [_shape(body, note) for body, note in ours[event_type]]
        for sample in samples:
            theirs = _shape(
                json.dumps(sample["envelope"]).encode(),
                decode_notification(json.dumps(sample["envelope"])),
            )
            if theirs not in shapes:
                differences[event_type] = [sorted(set(theirs) ^ set(s)) for s in shapes]
    assert not differences, differences


def test_service_ports_are_not_announced(sdk: Connection, sdk_as: Any, recorder: Recorder) -> None:
    _session(sdk, recorder, sdk_as("proj-a"))
    ports = [n for _, n in recorder.seen if n.event_type.startswith("port.create")]
    assert [
        n.payload["port"]["device_owner"] for n in ports if n.event_type == "port.create.end"
    ] == ["compute:nova"]


def test_a_refused_request_emits_nothing_and_a_missing_one_a_lone_start(
    network_api: NetworkApi, sdk: Connection, recorder: Recorder
) -> None:
    import httpx

    assert (
        httpx.post(f"{network_api.url}/v2.0/networks", json={"network": {"bogus": 1}}).status_code
        == 400
    )
    assert recorder.collect() == []
    assert (
        httpx.delete(
            f"{network_api.url}/v2.0/networks/00000000-0000-0000-0000-000000000000"
        ).status_code
        == 404
    )
    assert [n.event_type for n in recorder.collect()] == ["network.delete.start"]


def test_events_carry_the_caller(network_api: NetworkApi, sdk_as: Any, recorder: Recorder) -> None:
    sdk_as("proj-a").network.create_network(name="mine")
    notes = recorder.collect()
    assert [n.event_type for n in notes] == ["network.create.start", "network.create.end"]
    assert {n.context.project_id for n in notes} == {"proj-a"}
    assert all(not n.context.is_admin for n in notes)
    assert notes[0].publisher_id == "network.astara"
    assert asyncio.iscoroutinefunction(recorder.subscription.__anext__)

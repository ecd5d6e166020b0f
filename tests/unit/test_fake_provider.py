"""The fake provider keeps ``Provider``'s promises: idempotence, stable NIC names, errors, injection."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv6Network

import pytest

from astara.providers.base import (
    PortSpec,
    Provider,
    ProviderConflictError,
    ProviderNotFoundError,
    ProviderPermanentError,
    ProviderTemporaryError,
)
from astara.providers.fake import FakeProvider
from astara.providers.naming import management_address, name_candidates

ROUTER = "1a2b3c4d-0000-4000-8000-000000000001"
TWIN = "1a2b3c4d-ffff-4000-8000-000000000002"  # the same first 8 characters
MGMT = IPv6Network("fdca:3ba5:a17a:acda::/64")


def _port(n: int) -> PortSpec:
    return PortSpec(f"port-{n}", f"net-{n}", "vxlan", 100 + n, f"fa:16:3e:00:00:{n:02x}", 1450)


def test_is_a_provider() -> None:
    assert isinstance(FakeProvider(), Provider)


async def test_boot_names_the_instance_and_numbers_its_nics() -> None:
    fake = FakeProvider(clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    made = await fake.boot(router_id=ROUTER, ports=[_port(1), _port(2)])
    assert made.name == "astara-1a2b3c4d"
    assert made.management_address == management_address(MGMT, ROUTER)
    assert made.management_address in MGMT
    assert made.booted_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert [(n.ifname, n.port_id) for n in made.nics] == [("ge1", "port-1"), ("ge2", "port-2")]
    assert made.macs == {"fa:16:3e:00:00:01", "fa:16:3e:00:00:02"}
    assert await fake.get(router_id=ROUTER) == made


async def test_boot_twice_is_the_same_instance() -> None:
    fake = FakeProvider()
    first = await fake.boot(router_id=ROUTER, ports=[_port(1)])
    again = await fake.boot(router_id=ROUTER, ports=[_port(1)])
    assert again == first
    assert await fake.list() == [first]


async def test_plug_and_unplug_keep_the_other_nics_names() -> None:
    fake = FakeProvider()
    await fake.boot(router_id=ROUTER, ports=[_port(1), _port(2)])
    plugged = await fake.plug(router_id=ROUTER, port=_port(3))
    assert plugged.nic_of("port-3") is not None
    assert plugged.nic_of("port-3").ifname == "ge3"  # type: ignore[union-attr]
    assert await fake.plug(router_id=ROUTER, port=_port(3)) == plugged  # idempotent
    await fake.unplug(router_id=ROUTER, port_id="port-1")
    await fake.unplug(router_id=ROUTER, port_id="port-1")  # idempotent
    left = await fake.get(router_id=ROUTER)
    assert left is not None
    assert [(n.ifname, n.port_id) for n in left.nics] == [("ge2", "port-2"), ("ge3", "port-3")]
    # the smallest free number is reused for a new port
    again = await fake.plug(router_id=ROUTER, port=_port(4))
    assert again.nic_of("port-4").ifname == "ge1"  # type: ignore[union-attr]


async def test_plug_without_an_instance_is_not_found() -> None:
    fake = FakeProvider()
    with pytest.raises(ProviderNotFoundError):
        await fake.plug(router_id=ROUTER, port=_port(1))
    assert issubclass(ProviderNotFoundError, ProviderPermanentError)
    await fake.unplug(router_id=ROUTER, port_id="port-1")  # no instance: still fine


async def test_destroy_is_idempotent() -> None:
    fake = FakeProvider()
    await fake.boot(router_id=ROUTER, ports=[_port(1)])
    await fake.destroy(router_id=ROUTER)
    await fake.destroy(router_id=ROUTER)
    assert await fake.get(router_id=ROUTER) is None
    assert await fake.list() == []


async def test_a_name_clash_takes_the_next_longer_name() -> None:
    fake = FakeProvider()
    first = await fake.boot(router_id=ROUTER, ports=[])
    second = await fake.boot(router_id=TWIN, ports=[])
    assert first.name == "astara-1a2b3c4d"
    assert second.name == name_candidates("astara-", TWIN)[1] == "astara-1a2b3c4dffff"
    assert first.management_address != second.management_address


async def test_injected_failure_changes_nothing_then_clears() -> None:
    fake = FakeProvider()
    fake.fail("boot", ProviderTemporaryError("agent down"), times=2)
    for _ in range(2):
        with pytest.raises(ProviderTemporaryError, match="agent down"):
            await fake.boot(router_id=ROUTER, ports=[_port(1)])
    assert await fake.get(router_id=ROUTER) is None
    assert (await fake.boot(router_id=ROUTER, ports=[_port(1)])).name == "astara-1a2b3c4d"
    fake.fail("destroy", ProviderConflictError("held"))
    with pytest.raises(ProviderConflictError):
        await fake.destroy(router_id=ROUTER)
    assert await fake.get(router_id=ROUTER) is not None
    assert ("boot", ROUTER) in fake.calls
    with pytest.raises(ValueError, match="unknown operation"):
        fake.fail("reboot", ProviderTemporaryError("x"))


def test_names_and_addresses() -> None:
    assert name_candidates("astara-", ROUTER)[0] == "astara-1a2b3c4d"
    assert name_candidates("astara-", ROUTER)[-1] == "astara-" + ROUTER.replace("-", "")
    assert name_candidates("p-", "router.one")[0] == "p-router.o"
    for rid in (ROUTER, TWIN, "x"):
        address = management_address(MGMT, rid)
        assert address in MGMT
        assert address not in (MGMT[0], MGMT[1])
        assert address == management_address(MGMT, rid)  # deterministic


def test_the_management_mac_is_unicast_locally_administered_and_stable() -> None:
    from astara.providers.naming import management_mac

    macs = {management_mac(f"router-{i}") for i in range(2000)}
    assert len(macs) == 2000  # 46 bits of hash: no two of a few thousand routers meet
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x01 == 0  # unicast
        assert first & 0x02 == 0x02  # locally administered
        assert len(mac.split(":")) == 6
    assert management_mac("router-1") == management_mac("router-1")

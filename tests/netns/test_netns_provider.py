"""The netns provider against the real kernel and a real ``astara appliance serve --empty``.

Everything is named for this run so the session leak check covers it: the
namespaces ``test-<run>-p-<router id[:8]>…``, the fabric's links
``t<run>p-…``, the management bridge ``t<run>mgt``; the management prefix is
a random ULA /64, so a real ``astara-mgt`` on the machine is never touched.
The agent runs as a subprocess and is ended by its pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from ipaddress import IPv6Network
from pathlib import Path
from typing import Any

import httpx
import pytest

from astara.fabric import Fabric
from astara.providers.agent_control import AgentControl
from astara.providers.base import (
    Instance,
    PortSpec,
    Provider,
    ProviderConflictError,
    ProviderNotFoundError,
    ProviderTemporaryError,
)
from astara.providers.naming import management_address, management_mac
from astara.providers.netns import NetnsProvider
from astara.scenario import astara_executable
from tests.conftest import RUN, run_prefix

pytestmark = pytest.mark.netns

NS_PREFIX = f"{run_prefix()}-p-"
LINK_PREFIX = f"t{RUN}p-"
BRIDGE = f"t{RUN}mgt"


@dataclass(frozen=True)
class Agent:
    control: Path
    token: str
    pid: int


@dataclass
class Env:
    agent: Agent
    mgmt: IPv6Network
    fabrics: list[Fabric]

    def provider(self) -> NetnsProvider:
        """A new provider object, as a restarted orchestrator would make one."""
        fabric = Fabric(prefix=LINK_PREFIX)
        self.fabrics.append(fabric)
        return NetnsProvider(
            fabric=fabric,
            agent=AgentControl(self.agent.control),
            prefix=NS_PREFIX,
            mgmt_bridge=BRIDGE,
            mgmt_prefix=str(self.mgmt),
        )


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=False)
    return json.loads(out.stdout or "[]") if out.returncode == 0 else []


def _ns_links(ns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in _ip_json("-n", ns, "addr", "show")}


def _host_links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if n.startswith(LINK_PREFIX)}


def _namespaces() -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith(NS_PREFIX)}
    except FileNotFoundError:
        return set()


@pytest.fixture
def agent(workdir: Path) -> Iterator[Agent]:
    """``astara appliance serve --empty`` on a control socket in ``workdir``; killed by pid after."""
    token = secrets.token_urlsafe(24)
    (workdir / "token").write_text(token + "\n")
    control = workdir / "control.sock"
    argv = [
        astara_executable(),
        "appliance",
        "serve",
        "--empty",
        "--control-socket",
        str(control),
        "--state-dir",
        str(workdir / "state"),
        "--token-file",
        str(workdir / "token"),
    ]
    log = (workdir / "agent.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not control.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the agent did not start: {(workdir / 'agent.log').read_text()}"
                )
            time.sleep(0.05)
        yield Agent(control, token, proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
async def env(agent: Agent) -> AsyncIterator[Env]:
    """Providers sharing this run's names; everything they made is removed after the test."""
    ula = IPv6Network(f"fd00:a57b:{secrets.randbelow(0xFFFF):x}::/64")
    made = Env(agent, ula, [])
    try:
        yield made
    finally:
        cleaner = made.provider()
        for instance in await cleaner.list():
            with contextlib.suppress(Exception):
                await cleaner.destroy(router_id=instance.router_id)
        for network in await cleaner.fabric.networks():
            await cleaner.fabric.remove_network(network.network_id)
        for fabric in made.fabrics:
            fabric.close()
        for ns in _namespaces():
            subprocess.run(["ip", "netns", "del", ns], check=False)
        for link in [*sorted(_host_links()), BRIDGE]:
            subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)


def _port(n: int) -> PortSpec:
    return PortSpec(
        port_id=f"{uuid.uuid4()}",
        network_id=f"{RUN}-net-{n}",
        network_type="local",
        segmentation_id=None,
        mac=f"02:00:5e:20:{secrets.randbelow(256):02x}:{n:02x}",
        mtu=1450,
    )


async def _status(instance: Instance, token: str) -> int:
    """``GET /v1/status/`` of the appliance from the host; retried while it comes up."""
    url = f"http://[{instance.management_address}]:5000/v1/status/"
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(50):
            with contextlib.suppress(httpx.TransportError):
                return (await client.get(url, headers=headers)).status_code
            await asyncio.sleep(0.2)
    raise AssertionError(f"the appliance API at {url} never answered")


def _inode(ns: str) -> int:
    return os.stat(f"/run/netns/{ns}").st_ino


async def test_boot_hotplug_adopt_and_destroy(env: Env) -> None:
    router_id = str(uuid.uuid4())
    provider = env.provider()
    assert isinstance(provider, Provider)
    p1, p2, p3 = _port(1), _port(2), _port(3)

    made = await provider.boot(router_id=router_id, ports=[p1, p2])
    ns = made.name
    assert ns == NS_PREFIX + router_id.replace("-", "")[:8]
    assert ns in _namespaces()
    assert made.management_address == management_address(env.mgmt, router_id)
    links = _ns_links(ns)
    assert str(made.management_address) in {a["local"] for a in links["ge0"]["addr_info"]}
    assert links["ge0"]["address"] == management_mac(router_id)  # the same after a rebuild
    assert links["ge1"]["address"] == p1.mac and links["ge2"]["address"] == p2.mac
    assert links["ge1"]["mtu"] == 1450
    assert [(n.ifname, n.mac, n.port_id) for n in made.nics] == [
        ("ge1", p1.mac, p1.port_id),
        ("ge2", p2.mac, p2.port_id),
    ]
    assert await _status(made, env.agent.token) == 200
    served = await AgentControl(env.agent.control).list()
    assert [(s.netns, s.address) for s in served] == [(ns, made.management_address)]
    assert await provider.boot(router_id=router_id, ports=[p1, p2]) == made  # idempotent

    # hot-plug: the same namespace, no reboot, the next NIC name
    inode = _inode(ns)
    plugged = await provider.plug(router_id=router_id, port=p3)
    assert _inode(ns) == inode
    assert plugged.booted_at == made.booted_at
    assert plugged.nic_of(p3.port_id) is not None
    assert plugged.nic_of(p3.port_id).ifname == "ge3"  # type: ignore[union-attr]
    assert _ns_links(ns)["ge3"]["address"] == p3.mac
    assert await provider.plug(router_id=router_id, port=p3) == plugged  # idempotent
    assert await _status(plugged, env.agent.token) == 200
    await provider.unplug(router_id=router_id, port_id=p3.port_id)
    await provider.unplug(router_id=router_id, port_id=p3.port_id)  # idempotent
    assert "ge3" not in _ns_links(ns)
    assert _inode(ns) == inode
    assert await provider.get(router_id=router_id) == made

    # a restarted orchestrator adopts what exists
    adopter = env.provider()
    assert await adopter.get(router_id=router_id) == made
    assert await adopter.list() == [made]
    assert await adopter.boot(router_id=router_id, ports=[p1, p2]) == made
    assert _inode(ns) == inode

    await adopter.destroy(router_id=router_id)
    assert ns not in _namespaces()
    # only the networks' bridges stay: they belong to the fabric, not to the router
    assert _host_links() == {provider.fabric.names.bridge(p.network_id) for p in (p1, p2, p3)}
    assert await AgentControl(env.agent.control).list() == []
    assert await adopter.get(router_id=router_id) is None
    assert await adopter.list() == []
    await adopter.destroy(router_id=router_id)  # twice is fine
    await provider.destroy(router_id=router_id)


async def test_plug_before_boot_is_not_found(env: Env) -> None:
    provider = env.provider()
    with pytest.raises(ProviderNotFoundError):
        await provider.plug(router_id=str(uuid.uuid4()), port=_port(1))
    await provider.unplug(router_id=str(uuid.uuid4()), port_id="nothing")
    await provider.destroy(router_id=str(uuid.uuid4()))


async def test_routers_sharing_eight_characters_get_their_own_namespaces(env: Env) -> None:
    provider = env.provider()
    head = uuid.uuid4().hex[:8]
    first_id = f"{head}-0000-4000-8000-{secrets.token_hex(6)}"
    second_id = f"{head}-ffff-4000-8000-{secrets.token_hex(6)}"
    first = await provider.boot(router_id=first_id, ports=[])
    second = await provider.boot(router_id=second_id, ports=[])
    assert first.name == NS_PREFIX + head
    assert second.name == NS_PREFIX + head + "ffff"
    assert first.management_address != second.management_address
    assert await env.provider().get(router_id=second_id) == second
    assert await _status(second, env.agent.token) == 200
    await provider.destroy(router_id=first_id)
    assert await provider.get(router_id=second_id) == second
    await provider.destroy(router_id=second_id)
    assert _namespaces() == set()


async def test_a_management_address_held_by_another_router_is_a_conflict(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found from the management bridge's ports (labelled with their router), without
    reading every namespace; the conflict names the holder. (The boot leaves its namespace,
    unlabelled, as any boot that fails half-way: no instance, and a later boot reuses it.)"""
    provider = env.provider()
    first_id, second_id = str(uuid.uuid4()), str(uuid.uuid4())
    first = await provider.boot(router_id=first_id, ports=[])
    assert await provider.list() == [first]
    held = management_address(env.mgmt, first_id)
    monkeypatch.setattr(
        "astara.providers.netns.management_address",
        lambda network, router_id: held,  # every router's address collides with first's
    )
    try:
        with pytest.raises(ProviderConflictError, match=first_id):
            await provider.boot(router_id=second_id, ports=[])
        assert await provider.get(router_id=second_id) is None
        assert await provider.boot(router_id=first_id, ports=[]) == first  # its own: no conflict
    finally:
        monkeypatch.undo()
        await provider.destroy(router_id=first_id)
        for leftover in _namespaces():  # the failed boot's unlabelled namespace
            subprocess.run(["ip", "netns", "del", leftover], check=False)
    assert _namespaces() == set()


async def test_a_longer_prefix_is_another_deployment_and_never_listed(env: Env) -> None:
    """``astara-`` must not take ``astara-bench-…``'s appliances for its own (``astara down``)."""
    other = NetnsProvider(
        fabric=Fabric(prefix=LINK_PREFIX),
        agent=AgentControl(env.agent.control),
        prefix=NS_PREFIX + "x-",
        mgmt_bridge=BRIDGE,
        mgmt_prefix=str(env.mgmt),
    )
    router_id = str(uuid.uuid4())
    theirs = await other.boot(router_id=router_id, ports=[])
    try:
        assert theirs.name.startswith(NS_PREFIX)
        assert await env.provider().list() == []
        assert await env.provider().get(router_id=router_id) is None
        assert await other.list() == [theirs]
    finally:
        await other.destroy(router_id=router_id)


async def test_no_agent_is_temporary_and_a_later_boot_finishes(env: Env, workdir: Path) -> None:
    router_id = str(uuid.uuid4())
    lost = env.provider()
    lost.agent = AgentControl(workdir / "no-agent.sock")
    with pytest.raises(ProviderTemporaryError, match="no appliance agent"):
        await lost.boot(router_id=router_id, ports=[_port(1)])
    made = await env.provider().boot(router_id=router_id, ports=[_port(1)])
    assert await _status(made, env.agent.token) == 200
    with pytest.raises(ProviderTemporaryError):
        await lost.destroy(router_id=router_id)  # nothing deleted while the agent is unreachable
    assert made.name in _namespaces()
    await env.provider().destroy(router_id=router_id)
    assert made.name not in _namespaces()


async def test_a_network_removed_under_the_provider_is_ensured_again_on_the_next_plug(
    env: Env,
) -> None:
    router_id = str(uuid.uuid4())
    provider = env.provider()
    first = _port(5)
    made = await provider.boot(router_id=router_id, ports=[first])
    assert made.nic_of(first.port_id) is not None
    # the network goes (an operator, astara down of another run): the provider does not know
    await provider.fabric.remove_network(first.network_id)
    assert first.network_id not in {n.network_id for n in await provider.fabric.networks()}
    second = dataclasses.replace(first, port_id=str(uuid.uuid4()), mac="02:00:5e:21:00:05")
    plugged = await provider.plug(router_id=router_id, port=second)
    assert plugged.nic_of(second.port_id) is not None  # ensured again, then plugged
    assert first.network_id in {n.network_id for n in await provider.fabric.networks()}
    await provider.destroy(router_id=router_id)

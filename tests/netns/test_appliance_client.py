"""ApplianceClient against a real agent (``astara appliance serve``) in a lab namespace.

The scenario's router namespace is served on its management address (IPv6,
so every URL here has brackets); the client talks to it from the host like
the orchestrator would: status, a configuration pushed and read back, the
appliance's 422 and 401 parsed into ``ApplianceRefused``, and a dead address
reported as ``ApplianceUnreachable`` quickly.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from astara import scenario as sc
from astara.lab import Lab
from astara.orchestrator.appliance_client import (
    ApplianceClient,
    ApplianceRefused,
    ApplianceUnreachable,
)
from astara.wire.appliance_v1 import ConfigurationBody

pytestmark = pytest.mark.netns


@dataclass(frozen=True)
class Served:
    scenario: sc.RouterScenario
    token: str


@pytest.fixture
def served(lab: Lab, workdir: Path) -> Iterator[Served]:
    """The scenario's router served by an agent; dropped and stopped after the test."""
    scenario = sc.build(lab, workdir / "scenario")
    token = secrets.token_urlsafe(24)
    token_file = workdir / "token"
    token_file.write_text(token + "\n")
    agent_log = workdir / "agent.log"
    agent: subprocess.Popen[bytes] = lab.spawn(
        None, sc.agent_command(scenario, token_file=token_file), log=agent_log
    )
    base = f"http://[{scenario.mgmt_router}]:5000"
    probe = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    try:
        sc.wait_for_api(probe, agent)
        yield Served(scenario, token)
    finally:
        probe.close()
        try:
            scenario.drop_appliance(check=True)
        finally:
            agent.terminate()
            agent.wait(timeout=30)
            print("agent log:\n" + agent_log.read_text(errors="replace"))


def _management_only(s: sc.RouterScenario, *, mac: str = sc.MACS["ge0"]) -> ConfigurationBody:
    """The smallest configuration: the management network on ge0, nothing else."""
    return ConfigurationBody.model_validate(
        {
            "configuration": {
                "tenant_id": "client-test",
                "networks": [
                    {
                        "network_id": "net-mgmt",
                        "network_type": "management",
                        "interface": {
                            "ifname": "ge0",
                            "lladdr": mac,
                            "addresses": [f"{s.mgmt_router}/64"],
                        },
                    }
                ],
            }
        }
    )


async def test_status_config_and_interfaces(served: Served) -> None:
    s = served.scenario
    client = ApplianceClient(token=served.token, timeout=30)
    try:
        status = await client.status(s.mgmt_router)
        assert (status.v4, status.v6) == (False, False)  # nothing configured, no gateways
        assert await client.get_config(str(s.mgmt_router)) is None

        body = _management_only(s)
        applied = await client.put_config(s.mgmt_router, body)
        assert applied == body
        assert await client.get_config(s.mgmt_router) == body

        names = {i.ifname: i for i in await client.interfaces(s.mgmt_router)}
        assert f"{s.mgmt_router}/64" in names["ge0"].addresses
    finally:
        await client.aclose()


async def test_a_config_the_appliance_rejects_is_refused_with_its_fields(served: Served) -> None:
    s = served.scenario
    client = ApplianceClient(token=served.token, timeout=30)
    try:
        with pytest.raises(ApplianceRefused) as caught:
            await client.put_config(s.mgmt_router, _management_only(s, mac="02:00:00:00:99:99"))
        refused = caught.value
        assert (refused.status, refused.code, refused.temporary) == (422, "invalid_config", False)
        assert [f.field.split("networks.", 1)[-1] for f in refused.fields] == ["0.interface.lladdr"]
        assert "02:00:00:00:99:99" in refused.fields[0].reason
        assert await client.get_config(s.mgmt_router) is None  # nothing was applied
    finally:
        await client.aclose()


async def test_a_wrong_token_is_refused(served: Served) -> None:
    client = ApplianceClient(token="not-" + served.token)
    try:
        with pytest.raises(ApplianceRefused) as caught:
            await client.status(served.scenario.mgmt_router)
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    finally:
        await client.aclose()


async def test_nobody_listening_is_unreachable_quickly(served: Served) -> None:
    s = served.scenario
    # a port nobody listens on at a live address: refused at once
    closed_port = ApplianceClient(token=served.token, port=5999, timeout=5)
    # an address on the management /64 nobody owns: no neighbour, the timeout ends it
    nobody = s.mgmt_router + 0x1234
    short = ApplianceClient(token=served.token, timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(ApplianceUnreachable) as caught:
            await closed_port.status(s.mgmt_router)
        assert caught.value.temporary
        assert time.monotonic() - started < 2
        started = time.monotonic()
        with pytest.raises(ApplianceUnreachable):
            await short.status(nobody)
        assert time.monotonic() - started < 3
    finally:
        await closed_port.aclose()
        await short.aclose()

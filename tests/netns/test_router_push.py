"""``Router.push`` in a real namespace: the order of the transaction and its refusals.

The firewall is loaded first and not dry-run apart (see ``appliance/router.py``):
a ruleset nft refuses must still be a ConfigError that leaves every part of the
previous configuration in force.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from astara.appliance.errors import ApplyError, ConfigError
from astara.appliance.router import Router
from astara.appliance.services import firewall as firewall_module
from astara.appliance.system.netns import Netns
from astara.lab import Lab
from astara.wire.appliance_v1 import ConfigurationBody
from tests.unit.test_render_nftables import router_config

pytestmark = pytest.mark.netns


def _mac(index: int) -> str:
    return f"fa:16:3e:00:00:{index:02x}"  # what router_config() names for ge<index>


def _body(config: dict[str, Any]) -> ConfigurationBody:
    try:
        return ConfigurationBody.model_validate({"configuration": config})
    except ValidationError as exc:  # pragma: no cover - a broken fixture
        raise AssertionError(str(exc)) from exc


@pytest.fixture
async def router(lab: Lab) -> AsyncIterator[tuple[Router, str]]:
    state = Path(tempfile.mkdtemp(prefix="astara-push-test-"))
    state.chmod(0o755)  # dnsmasq reads its files as an unprivileged user (tmp_path is 0700)
    ns = lab.namespace("r")
    peer = lab.namespace("p")
    for index in range(5):
        lab.veth(ns, f"ge{index}", peer, f"eth{index}", mac_a=_mac(index))
    appliance = Router(netns=Netns(ns), state_dir=state / "router")
    try:
        yield appliance, ns
    finally:
        await appliance.close(stop_services=True)
        shutil.rmtree(state)


def _config(*, internals: int) -> ConfigurationBody:
    """A router with ``internals`` internal networks (ge2…), no floating IP, no BGP."""
    return _body(router_config(internals=internals, floating=0, bgp=False))


def _addresses(lab: Lab, ns: str) -> str:
    return lab.run(ns, ["ip", "-o", "address", "show", "scope", "global"])


async def test_a_refused_ruleset_is_a_config_error_and_changes_nothing(
    lab: Lab, router: tuple[Router, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    appliance, ns = router
    first = _config(internals=1)
    await appliance.push(first)
    ruleset = await appliance.firewall.listing()
    addresses = _addresses(lab, ns)
    assert "10.0.1.1/24" in addresses

    def broken(*_args: Any, **_kwargs: Any) -> str:
        return "table inet astara {\n\tchain input { bogus }\n}\n"

    monkeypatch.setattr(firewall_module, "render_ruleset", broken)
    second = _config(internals=2)
    with pytest.raises(ConfigError, match="firewall refused it"):
        await appliance.push(second)
    # nothing of the refused config reached the kernel, and the old one is still the config
    assert _addresses(lab, ns) == addresses
    assert "10.0.2.1/24" not in _addresses(lab, ns)
    assert await appliance.firewall.listing() == ruleset
    assert appliance.config == first

    monkeypatch.undo()
    await appliance.push(second)  # and the same config, once loadable, goes through
    assert "10.0.2.1/24" in _addresses(lab, ns)
    assert '"ge3"' in await appliance.firewall.listing()


async def test_a_daemon_refusal_is_reported_before_the_firewall_is_touched(
    lab: Lab, router: tuple[Router, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    appliance, ns = router
    first = _config(internals=1)
    await appliance.push(first)
    ruleset = await appliance.firewall.listing()

    async def refuse(_plan: Any) -> None:
        raise ApplyError("dnsmasq", "refused by the test")

    monkeypatch.setattr(appliance.dnsmasq, "check", refuse)
    with pytest.raises(ConfigError, match="dnsmasq refused it: refused by the test"):
        await appliance.push(_config(internals=2))
    assert await appliance.firewall.listing() == ruleset
    assert "10.0.2.1/24" not in _addresses(lab, ns)

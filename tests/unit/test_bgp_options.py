"""``--asn``/``--neighbor-asn`` of ``astara up``/``orchestrator`` reach ``build_config``.

Flags (or the config file) -> ``OrchestratorSettings`` -> the runner's
``RouterReconciler`` -> the configuration it builds and pushes; a router
without an external IPv6 gateway gets no BGP (the appliance would refuse it).
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from astara.bus.embedded import EmbeddedBus
from astara.cli import up
from astara.cli.config_file import parse_with_config
from astara.orchestrator.router_reader import FixedIP
from astara.orchestrator.runner import Orchestrator, OrchestratorSettings
from astara.providers.fake import FakeProvider
from tests.unit.test_reconcile import GATEWAY, IFACE_A, FakeReader, World, _subnet


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    up.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def _provider() -> Any:
    return SimpleNamespace(
        mgmt_prefix=ipaddress.ip_network("fdca:3ba5:a17a:acda::/64"),
        host_address=ipaddress.ip_interface("fdca:3ba5:a17a:acda::1/64"),
    )


@pytest.mark.parametrize("command", ["up", "orchestrator"])
def test_the_flags_reach_the_orchestrator_settings(command: str) -> None:
    args = _parse(command, "--asn", "64513", "--neighbor-asn", "64512")
    settings = up._settings(args, _provider())
    assert (settings.asn, settings.neighbor_asn) == (64513, 64512)


def test_no_flags_no_bgp() -> None:
    settings = up._settings(_parse("up"), _provider())
    assert (settings.asn, settings.neighbor_asn) == (None, None)


def test_the_config_file_gives_them_too(tmp_path: Path) -> None:
    config = tmp_path / "astara.toml"
    config.write_text("[up]\nasn = 64513\nneighbor-asn = 64512\n")
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    up.register(commands)
    args = parse_with_config(parser, dict(commands.choices), ["up", "--config", str(config)])
    assert (args.asn, args.neighbor_asn) == (64513, 64512)


@pytest.mark.parametrize(
    "flags",
    [("--asn", "64513"), ("--neighbor-asn", "64512"), ("--asn", "0", "--neighbor-asn", "1")],
)
def test_half_or_bad_bgp_flags_are_refused(flags: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        up._check_bgp(_parse("up", *flags))


async def test_the_runner_hands_them_to_its_reconciler() -> None:
    bus = EmbeddedBus()
    orchestrator = Orchestrator(
        bus=bus,
        network_url="http://127.0.0.1:9",
        provider=FakeProvider(),
        appliance=SimpleNamespace(),  # type: ignore[arg-type]
        settings=OrchestratorSettings(asn=64513, neighbor_asn=64512),
    )
    try:
        reconciler = orchestrator.reconciler
        assert (reconciler._asn, reconciler._neighbor_asn) == (64513, 64512)
    finally:
        await orchestrator.close()
        await bus.close()


def _with_bgp(reader: FakeReader) -> World:
    world = World(reader=reader)
    world.reconciler._asn, world.reconciler._neighbor_asn = 64513, 64512
    return world


async def test_build_config_gets_them_when_the_router_has_an_ipv6_gateway() -> None:
    reader = FakeReader()
    reader.subnets_by_id["ext-v6"] = _subnet(
        "ext-v6", "ext", "2001:db8:ffff::/64", "2001:db8:ffff::1"
    )
    gateway = replace(
        GATEWAY,
        fixed_ips=(
            *GATEWAY.fixed_ips,
            FixedIP(subnet_id="ext-v6", ip_address="2001:db8:ffff::5"),
        ),
    )
    reader.ports = [gateway, IFACE_A]
    body = await _with_bgp(reader).reconciler._build("r1", reader)
    assert (body.configuration.asn, body.configuration.neighbor_asn) == (64513, 64512)


async def test_a_router_without_an_ipv6_gateway_speaks_no_bgp() -> None:
    reader = FakeReader()
    body = await _with_bgp(reader).reconciler._build("r1", reader)
    assert (body.configuration.asn, body.configuration.neighbor_asn) == (None, None)

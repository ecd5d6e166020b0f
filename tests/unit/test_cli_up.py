"""``astara up``/``down`` flags that need no root: ``--uplink`` as the fabric's uplinks."""

from __future__ import annotations

import argparse

import pytest

from astara.cli import up
from astara.cli.fabric_options import FabricOptionError, parse_uplinks


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    up.register(parser.add_subparsers())
    return parser.parse_args(list(argv))


def test_uplinks_are_repeatable_and_default_to_none() -> None:
    assert _parse("up").uplink == []
    args = _parse("down", "--uplink", "physnet1=eth1", "--uplink", "physnet2=eth2")
    assert parse_uplinks(args.uplink) == {"physnet1": "eth1", "physnet2": "eth2"}


@pytest.mark.parametrize("text", ["physnet1", "=eth1", "physnet1="])
def test_a_malformed_uplink_is_refused(text: str) -> None:
    with pytest.raises(FabricOptionError, match="expected PHYSNET=NIC"):
        parse_uplinks([text])

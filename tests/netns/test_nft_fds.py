"""nft runs with the agent holding more than FD_SETSIZE descriptors (1,000 appliances):
in-process while a reserved low descriptor is free, else through the ``nft`` command; never
on a descriptor ``select()`` refuses (glibc would abort the agent)."""

from __future__ import annotations

import os

import pytest

from astara.appliance.system import nftables
from astara.appliance.system.netns import Netns
from astara.lab import Lab

pytestmark = pytest.mark.netns

TABLE = "table inet probe {\n  chain c {\n    type filter hook input priority 0;\n  }\n}\n"


async def test_nft_runs_in_and_out_of_process_with_1100_descriptors_open(
    lab: Lab, many_fds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    netns = Netns(lab.namespace("fw"))
    nftables.reserve_low_fds()
    many_fds += [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    await nftables.run_nft(netns, TABLE)  # in-process, on a reserved descriptor
    assert "table inet probe" in await nftables.run_nft(netns, "list tables")

    # every low descriptor taken (as the loop's accepts may): the command does it
    taken = list(nftables._reserved)
    nftables._reserved.clear()
    many_fds += taken
    spawned: list[list[str]] = []
    real = nftables.subprocess.run

    def run(argv: list[str], **kwargs: object) -> object:
        spawned.append(argv)
        return real(argv, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(nftables.subprocess, "run", run)
    monkeypatch.setattr(nftables, "_reserve", lambda count: None)  # nothing low is left
    await nftables.run_nft(netns, "delete table inet probe")
    assert spawned == [["nft", "-f", "-"]]
    assert "probe" not in await nftables.run_nft(netns, "list tables")

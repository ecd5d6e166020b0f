"""Flows towards removed addresses are flushed, in both directions and both families."""

from __future__ import annotations

import ipaddress

from astara.appliance.services.conntrack import flush_addresses
from astara.appliance.system.netns import Netns
from astara.lab import Lab


def _flow(lab: Lab, ns: str, src: str, dst: str, sport: int) -> None:
    lab.run(
        ns,
        [
            "conntrack",
            "-I",
            "-s",
            src,
            "-d",
            dst,
            "-p",
            "tcp",
            "--sport",
            str(sport),
            "--dport",
            "80",
            "--state",
            "ESTABLISHED",
            "-t",
            "60",
            "-u",
            "ASSURED",
        ],
    )


def _flows(lab: Lab, ns: str) -> str:
    out = lab.run(ns, ["conntrack", "-L", "-f", "ipv4"], check=False)
    return out + lab.run(ns, ["conntrack", "-L", "-f", "ipv6"], check=False)


async def test_flush_removes_only_flows_of_removed_addresses(lab: Lab) -> None:
    ns = lab.namespace("ct")
    _flow(lab, ns, "10.0.0.1", "203.0.113.9", 1000)  # towards the address: orig direction
    _flow(lab, ns, "203.0.113.9", "198.51.100.7", 1001)  # from it: its replies come back to it
    _flow(lab, ns, "10.0.0.2", "198.51.100.7", 1002)  # unrelated
    _flow(lab, ns, "2001:db8::1", "2001:db8::9", 1003)  # IPv6, removed
    removed = [ipaddress.ip_interface("203.0.113.9/32"), ipaddress.ip_interface("2001:db8::9/64")]
    await flush_addresses(Netns(ns), removed)
    left = _flows(lab, ns)
    assert "dst=198.51.100.7 sport=1002" in left
    assert "203.0.113.9" not in left
    assert "2001:db8::9" not in left

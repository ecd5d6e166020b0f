"""Appliance benchmarks (issue step 1): apply times of a big router, memory per appliance.

- P8a: first configuration of a big router (50 internal networks, 1,000
  allocations, 200 floating IPs), as one PUT from the management network [<= 1 s];
- P8b: one floating-IP change on top of it [<= 50 ms, median of repeats];
- memory per extra appliance, all processes included: the agent's growth per
  appliance plus that appliance's dnsmasq and bird [<= 10 MB].

Everything runs for real: an agent process, namespaces, veths, nft, dnsmasq, bird.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from astara.lab import Lab
from astara.scenario import wait_for_api
from bench.figure import Figure

# What a floating-IP change costs, from a per-step profile of one push (see bench/README.md).
P8B_COST = (
    "Per push: the 150 kB body sent, parsed and echoed back; unchanged networks and floating "
    "IPs reuse their validated models, plans and JSON text; netlink writes one /32; the "
    "floating maps change by one nfnetlink element batch (decision 0005); conntrack flush of "
    "the removed address. Runs on this 2-core VM vary by +-20 ms."
)


def _astara() -> str:
    return str(Path(sys.executable).with_name("astara"))


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _daemon_pids(state_dir: Path) -> dict[str, list[int]]:
    """dnsmasq and bird pids whose command line names this run's state dir."""
    found: dict[str, list[int]] = {"dnsmasq": [], "bird": []}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if comm in found and str(state_dir) in cmdline:
            found[comm].append(int(proc.name))
    return found


@contextlib.contextmanager
def _agent(
    lab: Lab, workdir: Path, namespaces: list[str]
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    token = secrets.token_urlsafe(16)
    (workdir / "token").write_text(token)
    argv = [
        _astara(),
        "--log-level",
        "INFO",
        "appliance",
        "serve",
        "--token-file",
        str(workdir / "token"),
        "--state-dir",
        str(workdir / "state"),
        "--control-socket",
        str(workdir / "control.sock"),
    ]
    for ns in namespaces:
        argv += ["--netns", ns]
    agent = lab.spawn(None, argv, log=workdir / "agent.log")
    try:
        yield agent, token
    finally:
        for ns in namespaces:
            subprocess.run(
                [
                    _astara(),
                    "appliance",
                    "remove",
                    ns,
                    "--control-socket",
                    str(workdir / "control.sock"),
                ],
                capture_output=True,
                check=False,
                timeout=60,
            )


def _big_config(mgmt: str, networks: int, allocations: int, fips: int) -> dict[str, Any]:
    per_net = allocations // networks
    nets: list[dict[str, Any]] = [
        {
            "network_id": "mgmt",
            "network_type": "management",
            "interface": {"ifname": "ge0", "addresses": [f"{mgmt}/64"]},
        },
        {
            "network_id": "ext",
            "network_type": "external",
            "interface": {"ifname": "ge1", "addresses": ["203.0.113.2/24", "2001:db8:ffff::2/64"]},
            "subnets": [
                {"cidr": "203.0.113.0/24", "gateway_ip": "203.0.113.1"},
                {"cidr": "2001:db8:ffff::/64", "gateway_ip": "2001:db8:ffff::1"},
            ],
        },
    ]
    fixed: list[str] = []
    for i in range(networks):
        allocs = []
        for j in range(per_net):
            address = f"10.{i + 1}.0.{10 + j}"
            fixed.append(address)
            allocs.append(
                {
                    "device_id": f"dev-{i}-{j}",
                    "hostname": f"vm-{i}-{j}",
                    "mac_address": f"fa:16:3e:{i + 1:02x}:{j // 256:02x}:{j % 256:02x}",
                    "ip_addresses": {address: True},
                }
            )
        nets.append(
            {
                "network_id": f"net-{i}",
                "network_type": "internal",
                "interface": {
                    "ifname": f"ge{i + 2}",
                    "addresses": [f"10.{i + 1}.0.1/16", f"2001:db8:{i + 1:x}::1/64"],
                },
                "subnets": [
                    {"cidr": f"10.{i + 1}.0.0/16", "gateway_ip": f"10.{i + 1}.0.1"},
                    {
                        "cidr": f"2001:db8:{i + 1:x}::/64",
                        "ipv6_ra_mode": "slaac",
                        "ipv6_address_mode": "slaac",
                    },
                ],
                "address_allocations": allocs,
            }
        )
    floating = [{"floating_ip": f"203.0.113.{10 + k}", "fixed_ip": fixed[k]} for k in range(fips)]
    return {
        "configuration": {
            "tenant_id": "bench",
            "asn": 64513,
            "neighbor_asn": 64512,
            "orchestrator": {"address": mgmt, "metadata_port": 9697},
            "networks": nets,
            "floating_ips": floating,
        }
    }


def _bench_big_router(lab: Lab, workdir: Path, repeat: int) -> list[Figure]:
    router, outside, sink = lab.namespace("big"), lab.namespace("out"), lab.namespace("sink")
    host_nic = lab.host_name()
    lab.veth(None, host_nic, router, "ge0")
    lab.address(None, host_nic, "fd00:be:1::fffe/64")
    lab.address(router, "ge0", "fd00:be:1::1/64")
    lab.veth(router, "ge1", outside, "eth0")
    for i in range(50):
        lab.veth(router, f"ge{i + 2}", sink, f"s{i}")
    body = _big_config("fd00:be:1::1", 50, 1000, 200)
    with _agent(lab, workdir, [router]) as (_, token):
        client = httpx.Client(
            base_url="http://[fd00:be:1::1]:5000",
            timeout=60,
            headers={"Authorization": f"Bearer {token}"},
        )
        with client:
            wait_for_api(client, timeout=30)
            start = time.monotonic()
            response = client.put("/v1/system/config/", json=body)
            first_ms = (time.monotonic() - start) * 1000
            response.raise_for_status()
            samples = []
            fips = body["configuration"]["floating_ips"]
            for n in range(repeat):
                # alternately drop and restore the last floating IP
                body["configuration"]["floating_ips"] = fips[:-1] if n % 2 == 0 else fips
                start = time.monotonic()
                client.put("/v1/system/config/", json=body).raise_for_status()
                samples.append((time.monotonic() - start) * 1000)
    return [
        Figure(
            "P8a first config: 50 networks, 1,000 allocations, 200 FIPs",
            first_ms,
            "ms",
            1000,
            "one PUT, measured at the client: validation, netlink, nft, dnsmasq and bird start",
        ),
        Figure(
            "P8b one floating-IP change on that router (median)",
            statistics.median(samples),
            "ms",
            50,
            f"{repeat} PUTs of the full body, timed at the client; max {max(samples):.1f} ms, "
            f"min {min(samples):.1f} ms; the agent's own apply time (its log) median "
            f"{_agent_apply_median(workdir / 'agent.log', repeat):.1f} ms. " + P8B_COST,
        ),
    ]


def _agent_apply_median(log: Path, last: int) -> float:
    """Median of the agent's last ``last`` "applied (changed) in N ms" log lines."""
    times = [float(m) for m in re.findall(r"applied \(changed\) in (\d+) ms", log.read_text())]
    return statistics.median(times[-last:]) if times else float("nan")


def _small_config(mgmt: str, k: int) -> dict[str, Any]:
    return {
        "configuration": {
            "tenant_id": "bench",
            "networks": [
                {
                    "network_id": "mgmt",
                    "network_type": "management",
                    "interface": {"ifname": "ge0", "addresses": [f"{mgmt}/64"]},
                },
                {
                    "network_id": f"net-{k}",
                    "network_type": "internal",
                    "interface": {
                        "ifname": "ge2",
                        "addresses": ["10.0.0.1/24", "2001:db8:1::1/64"],
                    },
                    "subnets": [
                        {"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1"},
                        {
                            "cidr": "2001:db8:1::/64",
                            "ipv6_ra_mode": "slaac",
                            "ipv6_address_mode": "slaac",
                        },
                    ],
                    "address_allocations": [
                        {
                            "device_id": "d",
                            "hostname": "vm",
                            "mac_address": "fa:16:3e:00:00:10",
                            "ip_addresses": {"10.0.0.10": True},
                        }
                    ],
                },
            ],
        }
    }


def _bench_memory(lab: Lab, workdir: Path, count: int) -> list[Figure]:
    namespaces = []
    sink = lab.namespace("msink")
    for k in range(count):
        ns = lab.namespace(f"m{k}")
        host_nic = lab.host_name()
        lab.veth(None, host_nic, ns, "ge0")
        lab.address(None, host_nic, f"fd00:be:2:{k:x}::fffe/64")
        lab.address(ns, "ge0", f"fd00:be:2:{k:x}::1/64")
        lab.veth(ns, "ge2", sink, f"m{k}")
        namespaces.append(ns)
    with _agent(lab, workdir, namespaces) as (agent, token):
        rss: list[int] = []
        for k in range(count):
            client = httpx.Client(
                base_url=f"http://[fd00:be:2:{k:x}::1]:5000",
                timeout=60,
                headers={"Authorization": f"Bearer {token}"},
            )
            with client:
                wait_for_api(client, timeout=30)
                client.put(
                    "/v1/system/config/", json=_small_config(f"fd00:be:2:{k:x}::1", k)
                ).raise_for_status()
            rss.append(_rss_kb(agent.pid))
        daemons = _daemon_pids(workdir / "state")
        dnsmasq = [_rss_kb(p) for p in daemons["dnsmasq"]]
        bird = [_rss_kb(p) for p in daemons["bird"]]
        dnsmasq_pss = [_pss_kb(p) for p in daemons["dnsmasq"]]
        bird_pss = [_pss_kb(p) for p in daemons["bird"]]
    agent_share = (rss[-1] - rss[0]) / max(1, count - 1) / 1024
    per_daemons = (statistics.mean(dnsmasq) + statistics.mean(bird)) / 1024
    per_daemons_pss = (statistics.mean(dnsmasq_pss) + statistics.mean(bird_pss)) / 1024
    total = agent_share + per_daemons
    return [
        Figure(
            f"memory per extra appliance ({count} served by one agent)",
            total,
            "MB",
            10,
            f"agent growth {agent_share:.2f} MB + dnsmasq {statistics.mean(dnsmasq) / 1024:.2f} MB RSS"
            f" + bird {statistics.mean(bird) / 1024:.2f} MB RSS (PSS of both: {per_daemons_pss:.2f} MB);"
            f" agent RSS {rss[0] / 1024:.1f} MB with one appliance",
        ),
    ]


def run_appliance_benchmarks(*, appliances: int, repeat: int) -> list[Figure]:
    """Run the appliance figures; everything made (namespaces, daemons, files) is removed."""
    root = Path("/run/astara-bench")
    try:
        with Lab("astara-bench", link_tag="astbench") as lab:
            big = root / "big"
            big.mkdir(parents=True, exist_ok=True)
            figures = _bench_big_router(lab, big, repeat)
        with Lab("astara-bench2", link_tag="astbenm") as lab:
            mem = root / "mem"
            mem.mkdir(parents=True, exist_ok=True)
            figures += _bench_memory(lab, mem, appliances)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return figures

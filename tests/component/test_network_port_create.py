"""The port create path (SQLAlchemy Core, decision 14), on SQLite and PostgreSQL.

Its answer is built from what it inserted, not read back: it must be what a
read gives. Addresses are picked without a lock on the subnet: several
processes (here: several services on one database) never hand out one twice,
and on PostgreSQL an address another transaction is giving out is skipped, not
waited for.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from astara.network.context import Context
from astara.network.db.engine import open_database
from astara.network.errors import Conflict
from astara.network.service import NetworkService
from astara.settings import NetworkSettings
from tests.component.conftest import NetworkApi
from tests.conftest import scratch_database

ADMIN = {"X-Project-Id": "admin", "X-Roles": "admin,member,reader"}
MEMBER = {"X-Project-Id": "tenant-a", "X-Roles": "member,reader"}
ADMIN_CTX = Context(project_id="admin", is_admin=True, roles=("admin",))


def _post(api: NetworkApi, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    answer = httpx.post(f"{api.url}/v2.0/{path}", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_the_created_port_is_what_a_read_gives(network_api: NetworkApi) -> None:
    net = _post(network_api, "networks", {"network": {"name": "n", "shared": True}}, ADMIN)
    net_id = net["network"]["id"]
    v4 = _post(
        network_api,
        "subnets",
        {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.70.0.0/24"}},
        ADMIN,
    )["subnet"]
    for mode in ("slaac", "dhcpv6-stateful"):
        _post(
            network_api,
            "subnets",
            {
                "subnet": {
                    "network_id": net_id,
                    "ip_version": 6,
                    "cidr": "fd70:0:0:1::/64" if mode == "slaac" else "fd70:0:0:2::/64",
                    "ipv6_address_mode": mode,
                    "ipv6_ra_mode": mode,
                }
            },
            ADMIN,
        )
    group = _post(network_api, "security-groups", {"security_group": {"name": "web"}}, MEMBER)
    bodies = [
        ({"network_id": net_id}, ADMIN),
        ({"network_id": net_id}, MEMBER),  # its project's default group is made on the way
        (
            {
                "network_id": net_id,
                "name": "full",
                "description": "every attribute",
                "tags": ["a", "b"],
                "admin_state_up": False,
                "mac_address": "fa:16:3e:00:00:01",
                "device_id": "vm-1",
                "device_owner": "compute:nova",
                "binding:host_id": "host-1",
                "allowed_address_pairs": [
                    {"ip_address": "10.70.0.200/32"},
                    {"ip_address": "10.70.0.201", "mac_address": "fa:16:3e:00:00:02"},
                ],
                "fixed_ips": [
                    {"subnet_id": v4["id"], "ip_address": "10.70.0.50"},
                    {"subnet_id": v4["id"]},
                ],
            },
            ADMIN,
        ),
        (
            {"network_id": net_id, "security_groups": [group["security_group"]["id"]]},
            MEMBER,
        ),
        ({"network_id": net_id, "port_security_enabled": False}, MEMBER),
        ({"network_id": net_id, "device_owner": "network:dhcp", "fixed_ips": []}, ADMIN),
    ]
    made = []
    for body, headers in bodies:
        port = _post(network_api, "ports", {"port": body}, headers)["port"]
        read = httpx.get(f"{network_api.url}/v2.0/ports/{port['id']}", headers=headers)
        assert port == read.json()["port"], body
        made.append(port)
    assert [len(p["fixed_ips"]) for p in made] == [3, 3, 2, 3, 3, 0]  # v4, SLAAC, stateful v6
    full = made[2]
    assert [a["ip_address"] for a in full["fixed_ips"]] == ["10.70.0.50", "10.70.0.4"]
    assert full["revision_number"] == 0 and full["created_at"] == full["updated_at"]
    assert made[1]["security_groups"] and made[4]["security_groups"] == []


def test_a_port_on_a_network_without_subnets_has_no_addresses(network_api: NetworkApi) -> None:
    net_id = _post(network_api, "networks", {"network": {"name": "bare"}}, ADMIN)["network"]["id"]
    made = _post(network_api, "ports", {"port": {"network_id": net_id}}, ADMIN)["port"]
    assert made["fixed_ips"] == []
    missing = httpx.post(
        f"{network_api.url}/v2.0/ports",
        json={"port": {"network_id": "00000000-0000-0000-0000-00000000dead"}},
        headers=ADMIN,
    )
    assert missing.status_code == 404
    assert missing.json()["NeutronError"]["type"] == "NetworkNotFound"
    other = httpx.post(
        f"{network_api.url}/v2.0/ports", json={"port": {"network_id": net_id}}, headers=MEMBER
    )
    assert other.status_code == 404  # not its network, not shared


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_services_on_one_database_never_give_an_address_twice(kind: str, tmp_path: Path) -> None:
    """Two services (as two worker processes: each its own cursors) allocate at once."""
    with scratch_database(kind, tmp_path, "twoservices") as url:
        databases = [open_database(url) for _ in range(2)]
        try:
            services = [NetworkService(db, NetworkSettings(db_url=url)) for db in databases]
            net = services[0].create(ADMIN_CTX, "networks", {"network": {"name": "n"}})
            services[0].create(
                ADMIN_CTX,
                "subnets",
                {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.71.0.0/25"}},
            )

            def create(i: int) -> str:
                port = services[i % 2].create(
                    ADMIN_CTX, "ports", {"port": {"network_id": net["id"], "name": f"p{i}"}}
                )
                address: str = port["fixed_ips"][0]["ip_address"]
                return address

            with ThreadPoolExecutor(max_workers=12) as pool:
                addresses = list(pool.map(create, range(120)))
            assert len(set(addresses)) == 120
            assert all(a.startswith("10.71.0.") for a in addresses)
            with pytest.raises(Conflict, match="No more IP addresses"):  # 125 in the pools
                for i in range(120, 126):
                    create(i)
        finally:
            for db in databases:
                db.close()


def test_postgresql_skips_an_address_being_given_out_instead_of_waiting(tmp_path: Path) -> None:
    with scratch_database("postgresql", tmp_path, "inflight") as url:
        db = open_database(url)
        try:
            service = NetworkService(db, NetworkSettings(db_url=url))
            net = service.create(ADMIN_CTX, "networks", {"network": {"name": "n"}})
            service.create(
                ADMIN_CTX,
                "subnets",
                {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.72.0.0/24"}},
            )
            first = service.create(ADMIN_CTX, "ports", {"port": {"network_id": net["id"]}})
            assert first["fixed_ips"][0]["ip_address"] == "10.72.0.2"
            # another process (its own cursor) is giving out 10.72.0.3 and has not committed
            other = NetworkService(db, NetworkSettings(db_url=url))
            holding, release = threading.Event(), threading.Event()
            created: list[dict[str, Any]] = []

            def slow(session: Any) -> None:
                created.append(
                    other.resource("ports").create_view(  # type: ignore[attr-defined]
                        session, ADMIN_CTX, {"network_id": net["id"]}
                    )
                )
                holding.set()
                assert release.wait(10)

            other.resource("ports")._cursor(first["fixed_ips"][0]["subnet_id"]).restart(  # type: ignore[attr-defined]
                0x0A480002
            )
            thread = threading.Thread(target=lambda: other._write(slow))
            thread.start()
            try:
                assert holding.wait(10)
                assert created[0]["fixed_ips"][0]["ip_address"] == "10.72.0.3"
                started = time.monotonic()
                second = service.create(ADMIN_CTX, "ports", {"port": {"network_id": net["id"]}})
                assert time.monotonic() - started < 2  # not held up by the open transaction
                assert second["fixed_ips"][0]["ip_address"] == "10.72.0.4"
            finally:
                release.set()
                thread.join(10)
        finally:
            db.close()

"""``parse_router`` on a router object a real Neutron answered (shared fixtures)."""

from __future__ import annotations

import json

from astara.orchestrator.router_reader import parse_router
from tests.fixtures import API


def test_a_real_neutron_router_parses_with_its_status() -> None:
    obj = json.loads((API / "router_show.json").read_text())["router"]
    record = parse_router(obj)
    assert record.id == obj["id"]
    assert record.status == obj["status"]
    assert record.status in {"ACTIVE", "BUILD", "DOWN", "ERROR"}


def test_a_router_without_a_status_has_none() -> None:
    record = parse_router({"id": "r", "project_id": "p", "routes": []})
    assert record.status is None

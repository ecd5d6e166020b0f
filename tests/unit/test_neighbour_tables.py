"""``astara up`` warns when the kernel's neighbour tables are too small for many appliances."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from astara.cli.up import NEIGHBOUR_TABLE_MINIMUM, _check_neighbour_tables


def _proc(tmp_path: Path, v4: int, v6: int | None) -> Path:
    for family, limit in (("ipv4", v4), ("ipv6", v6)):
        if limit is None:
            continue
        path = tmp_path / family / "neigh" / "default"
        path.mkdir(parents=True)
        (path / "gc_thresh3").write_text(f"{limit}\n")
    return tmp_path


def test_the_kernel_default_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="astara.cli.up"):
        small = _check_neighbour_tables(_proc(tmp_path, 1024, 1024))
    assert small == ["ipv4 1024", "ipv6 1024"]
    assert "gc_thresh1/2/3" in caplog.text
    assert "Many routers on one host" in caplog.text


def test_raised_limits_and_a_missing_family_say_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="astara.cli.up"):
        assert _check_neighbour_tables(_proc(tmp_path, NEIGHBOUR_TABLE_MINIMUM, None)) == []
    assert caplog.text == ""

"""Segmentation: which network types exist, and ids from configured VLAN and VXLAN ranges.

Pure; the network service stores allocations in the database (a primary key
on type and id, so an id is never handed out twice, also under concurrency)
and asks this module which id to try next.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from astara.network.errors import BadRequest, Conflict

NETWORK_TYPES = ("flat", "vlan", "vxlan", "local")
VLAN_IDS = (1, 4094)
VXLAN_IDS = (1, 2**24 - 1)


@dataclass(frozen=True)
class SegmentRanges:
    """Configured ranges per type; an empty tuple means none can be allocated."""

    vlan: tuple[tuple[int, int], ...] = ((100, 4094),)
    vxlan: tuple[tuple[int, int], ...] = ((1, 65535),)
    #: the physical network VLANs are carried on when a request names none
    default_physical_network: str = "physnet1"
    #: the type of a tenant network whose request names none
    tenant_network_type: str = "vxlan"

    def ranges(self, network_type: str) -> tuple[tuple[int, int], ...]:
        return {"vlan": self.vlan, "vxlan": self.vxlan}.get(network_type, ())


def parse_ranges(text: str, *, network_type: str) -> tuple[tuple[int, int], ...]:
    """``"100:199,300:399"`` -> ((100, 199), (300, 399)), checked against the type's limits."""
    low, high = VLAN_IDS if network_type == "vlan" else VXLAN_IDS
    out: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition(":")
        try:
            start, end = int(first), int(last or first)
        except ValueError:
            raise ValueError(f"{network_type} range {part!r} is not START:END") from None
        if not low <= start <= end <= high:
            raise ValueError(f"{network_type} range {part!r} is outside {low}..{high}")
        out.append((start, end))
    return tuple(out)


def check_segment(
    network_type: str, segmentation_id: int | None, physical_network: str | None
) -> None:
    """Validate an explicitly requested segment (admin only); BadRequest names the problem."""
    if network_type not in NETWORK_TYPES:
        raise BadRequest(
            f"Invalid input for operation: network_type value '{network_type}' not supported.",
            type="InvalidInput",
        )
    if network_type in ("flat", "local") and segmentation_id is not None:
        raise BadRequest(
            f"Invalid input for operation: segmentation_id specified for {network_type} network.",
            type="InvalidInput",
        )
    if network_type == "local" and physical_network is not None:
        raise BadRequest(
            "Invalid input for operation: physical_network specified for local network.",
            type="InvalidInput",
        )
    limits = {"vlan": VLAN_IDS, "vxlan": VXLAN_IDS}.get(network_type)
    if (
        limits is not None
        and segmentation_id is not None
        and not limits[0] <= segmentation_id <= limits[1]
    ):
        raise BadRequest(
            f"Invalid input for operation: segmentation_id {segmentation_id} out of range "
            f"({limits[0]} through {limits[1]}).",
            type="InvalidInput",
        )


def first_free(ranges: Iterable[tuple[int, int]], taken: set[int], network_type: str) -> int:
    """The lowest id of ``ranges`` not in ``taken``; Conflict when every id is used."""
    for start, end in ranges:
        for candidate in range(start, end + 1):
            if candidate not in taken:
                return candidate
    raise Conflict(
        f"Unable to create the network. No tenant network is available for allocation "
        f"({network_type}).",
        type="NoNetworkAvailable",
    )

"""The fabric's values: what a network should be, and what the kernel was found to hold.

Pure and frozen. A ``NetworkSpec`` and a ``VxlanUnderlay`` check themselves
when built, so the fabric never starts changing the kernel for a request it
would have to refuse half-way: a bad value raises ``FabricInvalidError``.
``Network`` and ``PluggedPort`` are read back from the kernel (``Fabric.networks``
and ``Fabric.ports``): what a restarted service adopts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address

from astara.fabric.errors import FabricInvalidError

IPAddress = IPv4Address | IPv6Address

VLAN_IDS = range(1, 4095)
VXLAN_IDS = range(1, 2**24)
MTUS = range(68, 65536)
#: the kernel keeps at most 255 bytes of ifalias, where ids are stored
MAX_ID_LENGTH = 200
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_ID = re.compile(r"^[\x21-\x7e]+$")


class NetworkType(StrEnum):
    """How a network leaves the host (Neutron's ``provider:network_type``)."""

    FLAT = "flat"  # untagged, on the NIC of its physical network
    VLAN = "vlan"  # 802.1Q-tagged, on the NIC of its physical network
    VXLAN = "vxlan"  # VXLAN over the fabric's underlay
    LOCAL = "local"  # never leaves the host


def check_id(what: str, value: str) -> str:
    """A network or port id: printable ASCII without spaces, short enough for an ifalias."""
    if not _ID.match(value) or len(value) > MAX_ID_LENGTH:
        raise FabricInvalidError(
            f"{what} {value!r} must be 1-{MAX_ID_LENGTH} printable characters without spaces"
        )
    return value


def check_mtu(what: str, mtu: int) -> int:
    if mtu not in MTUS:
        raise FabricInvalidError(f"{what} MTU {mtu} is outside {MTUS.start}..{MTUS.stop - 1}")
    return mtu


def check_mac(mac: str) -> str:
    """A unicast MAC address, returned lower-case as the kernel reports it."""
    lowered = mac.lower()
    if not _MAC.match(lowered) or int(lowered[:2], 16) & 1:
        raise FabricInvalidError(f"MAC address {mac!r} is not a unicast xx:xx:xx:xx:xx:xx")
    return lowered


@dataclass(frozen=True)
class NetworkSpec:
    """One network as the network service wants it on this host."""

    network_id: str
    network_type: NetworkType
    segmentation_id: int | None = None
    physical_network: str | None = None
    mtu: int = 1500

    def __post_init__(self) -> None:
        check_id("network id", self.network_id)
        check_mtu(f"network {self.network_id}", self.mtu)
        try:
            kind = NetworkType(self.network_type)
        except ValueError:
            raise FabricInvalidError(
                f"network type {self.network_type!r} is not one of"
                f" {', '.join(t.value for t in NetworkType)}"
            ) from None
        # a plain string from a caller becomes the enum, so specs compare equal
        object.__setattr__(self, "network_type", kind)
        needs_physnet = kind in (NetworkType.FLAT, NetworkType.VLAN)
        if needs_physnet != (self.physical_network is not None):
            verb = "needs" if needs_physnet else "takes no"
            raise FabricInvalidError(f"a {kind} network {verb} physical network")
        ids = {NetworkType.VLAN: VLAN_IDS, NetworkType.VXLAN: VXLAN_IDS}.get(kind)
        if ids is None and self.segmentation_id is not None:
            raise FabricInvalidError(f"a {kind} network takes no segmentation id")
        if ids is not None and self.segmentation_id not in ids:
            raise FabricInvalidError(
                f"a {kind} network needs a segmentation id in {ids.start}..{ids.stop - 1},"
                f" not {self.segmentation_id}"
            )


@dataclass(frozen=True)
class VxlanUnderlay:
    """Where this host's VXLAN tunnels start and whom they flood to.

    BUM traffic (broadcast, unknown unicast, multicast) goes to the multicast
    ``group`` (joined on ``device``) and/or to each of ``peers`` (head-end
    replication, one flood entry per peer); unicast follows learned addresses.
    """

    local: IPAddress
    device: str | None = None
    group: IPAddress | None = None
    peers: tuple[IPAddress, ...] = ()
    port: int = 4789

    def __post_init__(self) -> None:
        others = [a for a in (self.group, *self.peers) if a is not None]
        if any(a.version != self.local.version for a in others):
            raise FabricInvalidError("VXLAN group and peers must have the local address's family")
        if self.group is not None and not self.group.is_multicast:
            raise FabricInvalidError(f"VXLAN group {self.group} is not a multicast address")
        if self.group is not None and self.device is None:
            raise FabricInvalidError("a VXLAN multicast group needs the underlay device to join on")
        if any(p.is_multicast for p in self.peers):
            raise FabricInvalidError("VXLAN peers are unicast addresses; use group for multicast")
        if not 1 <= self.port <= 65535:
            raise FabricInvalidError(f"VXLAN port {self.port} is outside 1..65535")


@dataclass(frozen=True)
class Network:
    """A network's bridge as found in the kernel, and how it leaves the host.

    ``nic`` is the host NIC on the bridge (flat) or under the VLAN device
    (vlan); ``segmentation_id`` the VLAN id or the VNI.
    """

    network_id: str
    bridge: str
    mtu: int
    network_type: NetworkType
    segmentation_id: int | None = None
    nic: str | None = None


@dataclass(frozen=True)
class PluggedPort:
    """A port's veth pair as found in the kernel: ``device`` is the end on the bridge.

    ``network_id`` is None only if the port's bridge was removed behind the
    fabric's back (``remove_network`` unplugs its ports first).
    """

    port_id: str
    network_id: str | None
    device: str
    mtu: int

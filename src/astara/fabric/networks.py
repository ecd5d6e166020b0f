"""A network on this host: its bridge, and the device that carries it off the host.

Owns, per network id: the bridge ``<prefix>b<tag>``, and its segment — the
VLAN device ``<prefix>v<tag>`` on the physical network's NIC, or the VXLAN
device ``<prefix>x<tag>`` on the fabric's underlay. A flat network's segment
is the physical network's NIC itself, made a port of the bridge: the one link
not named by the fabric that it changes, only ever enslaved and released,
never reconfigured or deleted. A local network has no segment.

Converges by diff: it reads the links, checks the request against the
settings before changing anything (an unknown physical network, a missing NIC
or underlay raise first), then creates what is missing, replaces a segment
device whose identity is wrong (VLAN id, VNI, parent, underlay) and fixes
MTU, master and link state in place. A bridge it made and could not finish is
removed again. Every link it makes carries the network id in its ifalias.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass

from astara.fabric.errors import (
    FabricConflictError,
    FabricError,
    FabricInvalidError,
    FabricKernelError,
    FabricNotFoundError,
)
from astara.fabric.kernel import LinkState, Rtnl
from astara.fabric.model import Network, NetworkSpec, NetworkType, VxlanUnderlay
from astara.fabric.names import BRIDGE, PORT, VLAN, VXLAN, Names


@dataclass(frozen=True)
class Layout:
    """What the fabric was configured with: names, physical network -> NIC, the underlay."""

    names: Names
    uplinks: Mapping[str, str]
    vxlan: VxlanUnderlay | None


@dataclass(frozen=True)
class UplinkSegment:
    physical_network: str
    nic: LinkState


@dataclass(frozen=True)
class VlanSegment:
    name: str
    parent: LinkState
    vlan_id: int


@dataclass(frozen=True)
class VxlanSegment:
    name: str
    vni: int
    underlay: VxlanUnderlay
    device: LinkState | None


Segment = UplinkSegment | VlanSegment | VxlanSegment | None


async def _nic(rtnl: Rtnl, layout: Layout, physical_network: str | None) -> LinkState:
    nic_name = layout.uplinks.get(physical_network or "")
    if nic_name is None:
        raise FabricInvalidError(
            f"physical network {physical_network!r} has no host NIC in the fabric's uplinks"
        )
    nic = await rtnl.get(name=nic_name)
    if nic is None:
        raise FabricNotFoundError(
            f"host NIC {nic_name!r} of physical network {physical_network!r} does not exist"
        )
    return nic


async def plan_segment(rtnl: Rtnl, layout: Layout, spec: NetworkSpec) -> Segment:
    """What should carry ``spec`` off the host; raises before anything is changed."""
    names = layout.names
    if spec.network_type is NetworkType.FLAT:
        nic = await _nic(rtnl, layout, spec.physical_network)
        return UplinkSegment(spec.physical_network or "", nic)
    if spec.network_type is NetworkType.VLAN:
        nic = await _nic(rtnl, layout, spec.physical_network)
        return VlanSegment(names.vlan(spec.network_id), nic, spec.segmentation_id or 0)
    if spec.network_type is NetworkType.VXLAN:
        underlay = layout.vxlan
        if underlay is None:
            raise FabricInvalidError(f"network {spec.network_id} is VXLAN: no underlay configured")
        device = None
        if underlay.device is not None:
            device = await rtnl.get(name=underlay.device)
            if device is None:
                raise FabricNotFoundError(f"VXLAN underlay NIC {underlay.device!r} does not exist")
        return VxlanSegment(
            names.vxlan(spec.network_id), spec.segmentation_id or 0, underlay, device
        )
    return None


def _owned(link: LinkState | None, network_id: str) -> bool:
    """A fabric-named link made for this network (no alias: made, not yet labelled)."""
    return link is not None and link.alias in (None, network_id)


async def _label(rtnl: Rtnl, link: LinkState, owner: str, mtu: int) -> None:
    if link.alias != owner:
        await rtnl.set(f"label {link.name}", link.index, ifalias=owner)
    if link.mtu != mtu:
        try:
            await rtnl.set(f"set the MTU of {link.name}", link.index, mtu=mtu)
        except FabricKernelError as exc:
            if exc.errno not in (errno.EINVAL, errno.ERANGE):
                raise
            raise FabricInvalidError(f"{link.name} cannot take MTU {mtu}: {exc}") from exc


async def ensure_bridge(
    rtnl: Rtnl, names: Names, spec: NetworkSpec, found: LinkState | None
) -> tuple[LinkState, bool]:
    """The network's bridge, up, labelled and at its MTU; True if made now."""
    name = names.bridge(spec.network_id)
    if found is not None and (found.kind != "bridge" or not _owned(found, spec.network_id)):
        raise FabricConflictError(
            f"{name} (the bridge name of network {spec.network_id}) is taken by"
            f" {found.kind or 'a link'} {found.alias or ''}".rstrip()
        )
    bridge = found
    if bridge is None:
        bridge = await rtnl.add(f"create bridge {name}", name=name, kind="bridge", mtu=spec.mtu)
        await rtnl.no_ipv6_addresses(bridge)
    await _label(rtnl, bridge, spec.network_id, spec.mtu)
    await rtnl.up(bridge)
    return bridge, found is None


def matches(link: LinkState, segment: Segment) -> bool:
    """``link`` is the segment device asked for: same VLAN id and NIC, or same VXLAN setup."""
    if isinstance(segment, VlanSegment):
        return (
            link.kind == "vlan"
            and link.vlan_id == segment.vlan_id
            and link.link == segment.parent.index
        )
    if isinstance(segment, VxlanSegment):
        underlay, vx = segment.underlay, link.vxlan
        return (
            vx is not None
            and vx.vni == segment.vni
            and vx.local == str(underlay.local)
            and vx.group == (str(underlay.group) if underlay.group else None)
            and vx.device == (segment.device.index if segment.device else None)
            and vx.port == underlay.port
        )
    return False


async def drop_stale_members(
    rtnl: Rtnl, layout: Layout, spec: NetworkSpec, bridge: LinkState, segment: Segment
) -> None:
    """Remove segment devices and release NICs that the network's spec no longer has.

    Every link looked at has a known name (the network's two segment names, the uplink
    NICs): each is read by name, never by a dump of every link on the host (which made the
    N-th network cost O(N), and 1,000 routers' networks O(N^2)).
    """
    wanted = segment.name if isinstance(segment, VlanSegment | VxlanSegment) else None
    for name in (layout.names.vlan(spec.network_id), layout.names.vxlan(spec.network_id)):
        link = await rtnl.get(name=name)
        stale = name != wanted or (link is not None and not matches(link, segment))
        if link is not None and _owned(link, spec.network_id) and stale:
            await rtnl.delete(link)
    keep = segment.nic.index if isinstance(segment, UplinkSegment) else None
    for nic in sorted(set(layout.uplinks.values())):
        link = await rtnl.get(name=nic)
        if link is not None and link.master == bridge.index and link.index != keep:
            await rtnl.set(f"release {link.name} from {bridge.name}", link.index, master=0)


async def _attach_nic(rtnl: Rtnl, segment: UplinkSegment, bridge: LinkState) -> None:
    nic = segment.nic
    if nic.master not in (None, bridge.index):
        holder = await rtnl.get(index=nic.master)
        raise FabricConflictError(
            f"NIC {nic.name} of physical network {segment.physical_network!r} is already"
            f" a port of {holder.name if holder else 'another device'}"
        )
    if nic.master is None:
        await rtnl.set(f"add {nic.name} to {bridge.name}", nic.index, master=bridge.index)
    await rtnl.up(nic)


def segment_attrs(segment: VlanSegment | VxlanSegment) -> dict[str, object]:
    """pyroute2's keywords that create the segment device."""
    if isinstance(segment, VlanSegment):
        return {"kind": "vlan", "link": segment.parent.index, "vlan_id": segment.vlan_id}
    underlay = segment.underlay
    family = "" if underlay.local.version == 4 else "6"
    attrs: dict[str, object] = {
        "kind": "vxlan",
        "vxlan_id": segment.vni,
        f"vxlan_local{family}": str(underlay.local),
        "vxlan_port": underlay.port,
        "vxlan_learning": 1,
    }
    if underlay.group is not None:
        attrs[f"vxlan_group{family}"] = str(underlay.group)
    if segment.device is not None:
        attrs["vxlan_link"] = segment.device.index
    return attrs


async def _create_segment(
    rtnl: Rtnl, segment: VlanSegment | VxlanSegment, spec: NetworkSpec
) -> LinkState:
    what = f"create {segment.name} for network {spec.network_id}"
    try:
        return await rtnl.add(what, name=segment.name, mtu=spec.mtu, **segment_attrs(segment))
    except FabricKernelError as exc:
        if isinstance(segment, VlanSegment) and exc.errno == errno.EOPNOTSUPP:
            raise FabricInvalidError(
                "this kernel has no 802.1Q VLAN devices (CONFIG_VLAN_8021Q): VLAN networks"
                " cannot be built on this host"
            ) from exc
        if exc.errno == errno.EEXIST:
            carrier = (
                f"VLAN {segment.vlan_id} on {segment.parent.name}"
                if isinstance(segment, VlanSegment)
                else f"VNI {segment.vni} on port {segment.underlay.port}"
            )
            raise FabricConflictError(f"{carrier} is already used by another device") from exc
        if exc.errno in (errno.EINVAL, errno.ERANGE):
            raise FabricInvalidError(f"cannot {what} with MTU {spec.mtu}: {exc}") from exc
        raise


async def _converge_flood(
    rtnl: Rtnl, device: LinkState, underlay: VxlanUnderlay, *, made: bool = False
) -> None:
    """The device's flood entries are the underlay's peers. A device ``made`` just now
    without a group has none yet: the forwarding database (a dump of the whole host's,
    O(networks), filtered here) is not read then."""
    have = set() if made and underlay.group is None else await rtnl.flood_entries(device.index)
    want = {str(peer) for peer in underlay.peers}
    for dst in sorted(want - have):
        await rtnl.add_flood(device.index, dst)
    for dst in sorted(have - want):
        await rtnl.remove_flood(device.index, dst)


async def ensure_segment(
    rtnl: Rtnl, spec: NetworkSpec, bridge: LinkState, segment: Segment
) -> None:
    """The segment exists, matches ``spec``, is a port of the bridge and is up."""
    if segment is None:
        return
    if isinstance(segment, UplinkSegment):
        await _attach_nic(rtnl, segment, bridge)
        return
    device = await rtnl.get(name=segment.name)
    if device is not None and not _owned(device, spec.network_id):
        raise FabricConflictError(
            f"{device.name} (the segment name of network {spec.network_id}) is taken by"
            f" network {device.alias}"
        )
    made = device is None
    if device is None:
        device = await _create_segment(rtnl, segment, spec)
        await rtnl.no_ipv6_addresses(device)
    await _label(rtnl, device, spec.network_id, spec.mtu)
    if device.master != bridge.index:
        await rtnl.set(f"add {device.name} to {bridge.name}", device.index, master=bridge.index)
    await rtnl.up(device)
    if isinstance(segment, VxlanSegment):
        await _converge_flood(rtnl, device, segment.underlay, made=made)


async def ensure_network(rtnl: Rtnl, layout: Layout, spec: NetworkSpec) -> Network:
    """Make the network as ``spec`` says; idempotent; see the module docstring."""
    segment = await plan_segment(rtnl, layout, spec)
    found = await rtnl.get(name=layout.names.bridge(spec.network_id))
    bridge, made = await ensure_bridge(rtnl, layout.names, spec, found)
    try:
        await drop_stale_members(rtnl, layout, spec, bridge, segment)
        await ensure_segment(rtnl, spec, bridge, segment)
    except FabricError as exc:
        if made:
            try:
                await remove_network(rtnl, layout.names, spec.network_id)
            except FabricError as cleanup:
                exc.add_note(f"removing the half-made network failed too: {cleanup}")
        raise
    network = await network_of(rtnl, layout, spec.network_id)
    if network is None:
        raise FabricKernelError(
            f"ensure network {spec.network_id}", errno.ENODEV, "bridge vanished"
        )
    return network


async def remove_network(
    rtnl: Rtnl, names: Names, network_id: str, links: list[LinkState] | None = None
) -> None:
    """Delete the network's bridge, its segment device and the ports on it; idempotent.

    A flat network's NIC is released by the kernel when its bridge goes. ``links``: a dump
    of every link, read earlier (by ``remove_networks``, which removes many with one
    dump); links of it gone since are no error.
    """
    if links is None:
        links = await rtnl.links()
    by_name = {link.name: link for link in links}
    bridge = by_name.get(names.bridge(network_id))
    if bridge is not None and bridge.kind == "bridge" and _owned(bridge, network_id):
        for link in links:
            if link.master == bridge.index and names.kind_of(link.name) == PORT:
                await rtnl.delete(link)
        await rtnl.delete(bridge)
    for name in (names.vlan(network_id), names.vxlan(network_id)):
        segment = by_name.get(name)
        if segment is not None and _owned(segment, network_id):
            await rtnl.delete(segment)


async def remove_networks(rtnl: Rtnl, names: Names, network_ids: list[str]) -> None:
    """``remove_network`` of each, with one dump of every link for them all (a dump per
    network made ``astara down`` of 1,000 networks O(N^2))."""
    links = await rtnl.links()
    for network_id in network_ids:
        await remove_network(rtnl, names, network_id, links)


def segment_of(
    names: Names, members: list[LinkState], by_index: dict[int, LinkState], nics: set[str]
) -> tuple[NetworkType, int | None, str | None]:
    """(type, VLAN id or VNI, NIC) of a bridge, from the links on it."""
    for link in members:
        kind = names.kind_of(link.name)
        if kind == VLAN and link.kind == "vlan" and link.vlan_id is not None:
            parent = by_index.get(link.link or 0)
            return NetworkType.VLAN, link.vlan_id, parent.name if parent else None
        if kind == VXLAN and link.vxlan is not None:
            return NetworkType.VXLAN, link.vxlan.vni, None
        if kind is None and link.name in nics:
            return NetworkType.FLAT, None, link.name
    return NetworkType.LOCAL, None, None


async def network_of(rtnl: Rtnl, layout: Layout, network_id: str) -> Network | None:
    """The network as ``list_networks`` reports it, None if it has no labelled bridge.

    Read by name: its bridge, then the links that can be its segment (the network's VLAN
    and VXLAN devices, the uplink NICs) and a VLAN's parent; no dump of every link.
    """
    names, nics = layout.names, set(layout.uplinks.values())
    bridge = await rtnl.get(name=names.bridge(network_id))
    if bridge is None or bridge.kind != "bridge" or bridge.alias != network_id:
        return None
    members: list[LinkState] = []
    for name in (names.vlan(network_id), names.vxlan(network_id), *sorted(nics)):
        link = await rtnl.get(name=name)
        if link is not None and link.master == bridge.index:
            members.append(link)
    members.sort(key=lambda link: link.index)  # the order of a dump, as list_networks sees it
    by_index: dict[int, LinkState] = {}
    for link in members:
        if link.kind == "vlan" and link.link:
            parent = await rtnl.get(index=link.link)
            if parent is not None:
                by_index[parent.index] = parent
    kind, segmentation_id, nic = segment_of(names, members, by_index, nics)
    return Network(bridge.alias, bridge.name, bridge.mtu, kind, segmentation_id, nic)


async def list_networks(rtnl: Rtnl, layout: Layout) -> list[Network]:
    """Every labelled bridge of this fabric, with how its network leaves the host."""
    links = await rtnl.links()
    by_index = {link.index: link for link in links}
    names, nics = layout.names, set(layout.uplinks.values())
    found = []
    for bridge in links:
        if names.kind_of(bridge.name) != BRIDGE or bridge.kind != "bridge" or not bridge.alias:
            continue
        members = [link for link in links if link.master == bridge.index]
        kind, segmentation_id, nic = segment_of(names, members, by_index, nics)
        found.append(Network(bridge.alias, bridge.name, bridge.mtu, kind, segmentation_id, nic))
    return found

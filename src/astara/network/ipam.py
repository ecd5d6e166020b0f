"""IP address management, pure: pools, gateways, picking free addresses, EUI-64.

Called by the subnet and port services, which hold the database rows; this
module sees only addresses (and ``Cursor``, a process's in-memory hint of where
to look next). Invariants: a pool lies inside its subnet, pools of a subnet
never overlap, the gateway is in no pool, the network and (IPv4) broadcast
addresses are never handed out.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from astara.network.errors import BadRequest, ExhaustedError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Pool:
    start: IPAddress
    end: IPAddress

    def __contains__(self, address: object) -> bool:
        return isinstance(address, type(self.start)) and int(self.start) <= int(address) <= int(
            self.end
        )

    def as_dict(self) -> dict[str, str]:
        return {"start": str(self.start), "end": str(self.end)}


def parse_cidr(text: object, *, field: str = "cidr") -> IPNetwork:
    """A subnet's CIDR; host bits must be zero, as Neutron requires."""
    reason = f"'{text}' is not a valid IP subnet."
    if isinstance(text, str):
        try:
            return ipaddress.ip_network(text)
        except ValueError:
            try:
                better = ipaddress.ip_network(text, strict=False)
                reason = f"'{text}' isn't a recommended CIDR, '{better}' is recommended"
            except ValueError:
                pass
    raise BadRequest(f"Invalid input for {field}. Reason: {reason}")


def parse_address(text: object, *, field: str) -> IPAddress:
    if not isinstance(text, str):
        raise BadRequest(f"Invalid input for {field}. Reason: '{text}' is not a valid IP address.")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise BadRequest(
            f"Invalid input for {field}. Reason: '{text}' is not a valid IP address."
        ) from None


def usable_range(cidr: IPNetwork) -> tuple[IPAddress, IPAddress]:
    """First and last address that may be handed out."""
    if cidr.num_addresses <= 2 or (cidr.version == 6 and cidr.prefixlen >= 127):
        return cidr.network_address, cidr.broadcast_address
    first = cidr.network_address + 1
    last = cidr.broadcast_address - 1 if cidr.version == 4 else cidr.broadcast_address
    return first, last


def default_gateway(cidr: IPNetwork) -> IPAddress:
    return usable_range(cidr)[0]


def default_pools(cidr: IPNetwork, gateway: IPAddress | None) -> list[Pool]:
    """The usable range of ``cidr`` minus the gateway (Neutron's default pools)."""
    first, last = usable_range(cidr)
    if gateway is None or not int(first) <= int(gateway) <= int(last):
        return [Pool(first, last)]
    pools = []
    if int(gateway) > int(first):
        pools.append(Pool(first, gateway - 1))
    if int(gateway) < int(last):
        pools.append(Pool(gateway + 1, last))
    return pools


def parse_pools(raw: object, cidr: IPNetwork, gateway: IPAddress | None) -> list[Pool]:
    """Validate ``allocation_pools`` from a request: inside the subnet, no overlap, no gateway."""
    if not isinstance(raw, list):
        raise BadRequest("Invalid input for allocation_pools. Reason: not a list.")
    pools: list[Pool] = []
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"start", "end"}:
            raise BadRequest(
                "Invalid input for allocation_pools. Reason: each pool needs start and end."
            )
        start = parse_address(item["start"], field="allocation_pools")
        end = parse_address(item["end"], field="allocation_pools")
        if start.version != cidr.version or end.version != cidr.version or int(start) > int(end):
            raise BadRequest(
                f"The allocation pool {start}-{end} is not valid.", type="InvalidAllocationPool"
            )
        if start not in cidr or end not in cidr:
            raise BadRequest(
                f"The allocation pool {start}-{end} spans beyond the subnet cidr {cidr}.",
                type="OutOfBoundsAllocationPool",
            )
        pools.append(Pool(start, end))
    ordered = sorted(pools, key=lambda p: int(p.start))
    for before, after in itertools.pairwise(ordered):
        if int(after.start) <= int(before.end):
            raise BadRequest(
                f"Found overlapping allocation pools: {before.start}-{before.end} and "
                f"{after.start}-{after.end} for subnet {cidr}.",
                type="OverlappingAllocationPools",
            )
    if gateway is not None and any(gateway in p for p in pools):
        raise BadRequest(
            f"Gateway ip {gateway} conflicts with allocation pool.",
            type="GatewayConflictWithAllocationPools",
        )
    return ordered


def address_int(text: str) -> int:
    """An address's integer value; ~50x faster than ``int(ipaddress.ip_address(text))``.

    For stored addresses (already validated): a subnet's allocations are read
    on every allocation, and parsing them was most of a port create.
    """
    if ":" in text:
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    return int.from_bytes(socket.inet_aton(text), "big")


def next_free(pools: Sequence[Pool], used: set[int]) -> IPAddress:
    """The lowest address of the pools not in ``used`` (integers); ExhaustedError if none is left."""
    for pool in pools:
        candidate = int(pool.start)
        while candidate <= int(pool.end):
            if candidate not in used:
                return ipaddress.ip_address(candidate)
            candidate += 1
    raise ExhaustedError("No more IP addresses available on network.")


def after(pools: Sequence[Pool], cursor: int) -> Iterator[int]:
    """The pools' addresses (as integers) above ``cursor``, in order."""
    for pool in pools:
        yield from range(max(int(pool.start), cursor + 1), int(pool.end) + 1)


def eui64(cidr: ipaddress.IPv6Network, mac: str) -> ipaddress.IPv6Address:
    """The SLAAC address of ``mac`` in a /64 (RFC 4291 modified EUI-64)."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    interface_id = bytes([*octets[:3], 255, 254, *octets[3:]])
    return ipaddress.IPv6Address(int(cidr.network_address) | int.from_bytes(interface_id, "big"))


IntPool = tuple[int, int]  # a pool's first and last address, as integers


def int_pools(pools: Iterable[dict[str, str]]) -> list[IntPool]:
    """A subnet's stored ``allocation_pools`` as integer ranges, in order."""
    return sorted((address_int(p["start"]), address_int(p["end"])) for p in pools)


def address_text(value: int, version: int) -> str:
    """The canonical text of an address given as an integer (what ``str(ip_address)`` gives)."""
    if version == 4:
        return socket.inet_ntoa(value.to_bytes(4, "big"))
    return str(ipaddress.IPv6Address(value))


def free(pools: Sequence[IntPool], taken: set[int]) -> Iterator[int]:
    """The pools' addresses not in ``taken``, lowest first (lazily: pools may be huge)."""
    for start, end in pools:
        candidate = start
        while candidate <= end:
            if candidate not in taken:
                yield candidate
            candidate += 1


class Cursor:
    """Where a process hands out a subnet's next address: after the last one it handed out.

    ``claim`` gives each caller (each thread) a different address, in order, so
    concurrent allocations in one process never try the same one; it is only a
    hint: the database's primary key decides (an address taken meanwhile by
    another process, or asked for by name, is skipped by the caller). ``None``
    when the cursor is unknown (a new process) or past the end of the pools:
    the caller then reads the subnet's allocations and ``restart``s at the
    lowest free address (addresses freed meanwhile come back that way).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: int | None = None

    def claim(self, pools: Sequence[IntPool]) -> int | None:
        with self._lock:
            if self._last is None:
                return None
            for start, end in pools:
                if self._last < end:
                    self._last = max(start, self._last + 1)
                    return self._last
            return None

    def restart(self, at: int) -> None:
        with self._lock:
            self._last = at

    def skip(self, count: int) -> None:
        """Jump ``count`` addresses ahead (they stay free, for after the end of the pools)."""
        with self._lock:
            if self._last is not None:
                self._last += count

"""Names and addresses of service instances, derived from the router id (shared by netns and fake).

- Namespace: ``<prefix><first 8 characters of the id without dashes>``
  (``astara-1a2b3c4d``), so an operator finds a router's namespace at a
  glance. Two routers whose ids share those characters are told apart by the
  router id stored on the instance (``ge0``'s ifalias); the second one takes
  the next longer name (12, 16, ... characters, at most the whole id).
- Management address: the /64 management prefix plus a 64-bit interface id,
  the first 8 bytes of SHA-256(router id); never ``::`` (subnet-router anycast)
  nor ``::1`` (the host's end). Two routers meet on one address with a
  probability of about n²/2⁶⁵; a provider still checks and refuses.
- Management MAC: locally administered, unicast, the other 46 bits from
  SHA-256("mac:" + router id). A rebuilt appliance answers on its address with
  the same MAC, so the host's neighbour cache (whose entries live 15 to 45 s)
  and the health probe's connections find the new instance at once instead of
  knocking at the dead one's MAC.
"""

from __future__ import annotations

import hashlib
import re
from ipaddress import IPv6Address, IPv6Network

#: the namespace name takes this many characters of the id first
SHORT = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")


def name_candidates(prefix: str, router_id: str) -> list[str]:
    """The names the router's namespace may have, shortest (the usual one) first."""
    stem = _UNSAFE.sub("", router_id)
    if not stem:
        stem = hashlib.sha256(router_id.encode()).hexdigest()
    lengths = [*range(SHORT, len(stem), 4), len(stem)]
    return list(dict.fromkeys(f"{prefix}{stem[:n]}" for n in lengths))


def management_address(network: IPv6Network, router_id: str) -> IPv6Address:
    """The router's address in ``network``; see the module docstring."""
    host_bits = network.max_prefixlen - network.prefixlen
    digest = int.from_bytes(hashlib.sha256(router_id.encode()).digest()[:8], "big")
    interface_id = digest % (1 << min(host_bits, 64))
    if interface_id < 2:
        interface_id += 2
    return network[interface_id]


def management_mac(router_id: str) -> str:
    """The router's ``ge0`` MAC; see the module docstring."""
    digest = bytearray(hashlib.sha256(f"mac:{router_id}".encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in digest)

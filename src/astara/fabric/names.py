"""Interface names of the fabric, derived from ids, and who owns which name.

Every link the fabric makes is called ``<prefix><kind><tag>``: kind ``b`` is a
network's bridge, ``v`` its VLAN device, ``x`` its VXLAN device, ``p`` the
bridge end of a port's veth pair. The tag fills the name to the kernel's 15
characters: the first hex digits of the id when it is a UUID (so an operator
can match ``astara-b3f2a1c9`` to network ``3f2a1c9…``), else of its SHA-256.

A name says which id it was made for only up to a collision of tags, so the
full id is also stored in the link's ifalias and checked; the fabric touches
only links whose names carry its prefix (and a host NIC it was told to use).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

from astara.fabric.errors import FabricInvalidError

#: IFNAMSIZ is 16 bytes with the terminating NUL
MAX_IFNAME = 15
#: shorter tags make collisions between ids too likely
MIN_TAG = 6
_PREFIX = re.compile(r"^[A-Za-z0-9_.\-]+$")

BRIDGE = "b"
VLAN = "v"
VXLAN = "x"
PORT = "p"


def tag_of(object_id: str, length: int) -> str:
    """``length`` hex digits that stand for ``object_id``."""
    try:
        digits = uuid.UUID(object_id).hex
    except ValueError:
        digits = hashlib.sha256(object_id.encode()).hexdigest()
    return digits[:length]


@dataclass(frozen=True)
class Names:
    """The names one fabric gives its links; ``prefix`` is at most 8 characters."""

    prefix: str = "astara-"

    def __post_init__(self) -> None:
        longest = MAX_IFNAME - 1 - MIN_TAG
        if not _PREFIX.match(self.prefix):
            raise FabricInvalidError(
                f"link prefix {self.prefix!r} may only hold letters, digits, '_', '.' and '-'"
            )
        if len(self.prefix) > longest:
            raise FabricInvalidError(
                f"link prefix {self.prefix!r} is {len(self.prefix)} characters; at most"
                f" {longest} leave room for a kind letter and a {MIN_TAG}-digit id tag"
                f" in a {MAX_IFNAME}-character interface name"
            )

    def _name(self, kind: str, object_id: str) -> str:
        return f"{self.prefix}{kind}{tag_of(object_id, MAX_IFNAME - len(self.prefix) - 1)}"

    def bridge(self, network_id: str) -> str:
        return self._name(BRIDGE, network_id)

    def vlan(self, network_id: str) -> str:
        return self._name(VLAN, network_id)

    def vxlan(self, network_id: str) -> str:
        return self._name(VXLAN, network_id)

    def port(self, port_id: str) -> str:
        return self._name(PORT, port_id)

    def kind_of(self, ifname: str) -> str | None:
        """The kind letter of a name this fabric could have made, else None."""
        if len(ifname) != MAX_IFNAME or not ifname.startswith(self.prefix):
            return None
        kind = ifname[len(self.prefix)]
        return kind if kind in (BRIDGE, VLAN, VXLAN, PORT) else None

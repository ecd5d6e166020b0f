"""The host's L2 fabric: Linux bridges, VLAN and VXLAN segments, and ports plugged by veth.

Per network (``NetworkSpec``)::

    flat    <prefix>b<tag> ── <uplink NIC>                 (untagged)
    vlan    <prefix>b<tag> ── <prefix>v<tag> ── <uplink NIC>  (802.1Q, VLAN id)
    vxlan   <prefix>b<tag> ── <prefix>x<tag> ~~ underlay     (VNI, UDP 4789)
    local   <prefix>b<tag>                                  (this host only)

and per plugged port, a veth pair ``<prefix>p<tag>`` (on the bridge) ──
``<ifname>`` (in the port's namespace, with the port's MAC and MTU).

``Fabric`` is the entry point; ``names`` says how names are made, ``networks``
and ``ports`` converge one kind each, ``kernel`` is the only pyroute2 code.
"""

from astara.fabric.errors import (
    FabricConflictError,
    FabricError,
    FabricInvalidError,
    FabricKernelError,
    FabricNotFoundError,
)
from astara.fabric.fabric import Fabric
from astara.fabric.model import (
    Network,
    NetworkSpec,
    NetworkType,
    PluggedPort,
    VxlanUnderlay,
)

__all__ = [
    "Fabric",
    "FabricConflictError",
    "FabricError",
    "FabricInvalidError",
    "FabricKernelError",
    "FabricNotFoundError",
    "Network",
    "NetworkSpec",
    "NetworkType",
    "PluggedPort",
    "VxlanUnderlay",
]

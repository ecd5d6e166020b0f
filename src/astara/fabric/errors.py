"""Errors of the L2 fabric, and what the caller does next.

Every failure the fabric raises on purpose is one of these; a netlink error it
did not expect is wrapped, never passed through raw::

    FabricError
    ├── FabricInvalidError    a setting or an argument is wrong (a prefix too long for
    │                         15-character names, a VLAN id out of range, a physical
    │                         network with no NIC, no VXLAN underlay, a kernel without
    │                         802.1Q): fix it; retrying does not help
    ├── FabricNotFoundError   something named does not exist (a host NIC, a namespace,
    │                         the network a port is plugged into): create it, then retry
    ├── FabricConflictError   a name or id is taken by something the request does not
    │                         own (an interface in the target namespace, a NIC already
    │                         on another bridge, a VLAN id in use): free it, then retry
    └── FabricKernelError     the kernel refused a change for another reason; ``errno``
                              says which. May be temporary: retry after a delay
"""

from __future__ import annotations


class FabricError(Exception):
    """Base of every error the fabric raises on purpose."""


class FabricInvalidError(FabricError):
    """A setting or an argument is wrong; the kernel was not touched for it."""


class FabricNotFoundError(FabricError):
    """A NIC, namespace or network named by a setting or a request does not exist."""


class FabricConflictError(FabricError):
    """A name or id the request needs is taken by something it does not own."""


class FabricKernelError(FabricError):
    """Netlink refused ``operation``; ``errno`` is the kernel's error number."""

    def __init__(self, operation: str, errno: int, reason: str) -> None:
        super().__init__(f"{operation}: {reason} (errno {errno})")
        self.operation = operation
        self.errno = errno

"""Named network namespaces (``/run/netns/<name>``): their fds, and netlink sockets inside them.

A socket keeps the namespace it was made in, so a short-lived thread enters
the namespace with ``setns(2)`` (which moves only that thread), makes the
socket and ends; the socket is then used from the event loop. pyroute2's own
``netns=`` support is not used: it forks a helper process, and a fork of an
asyncio process shares its signal wake-up fd.

This is the appliance agent's technique (``astara.appliance.system.netns``),
repeated here because the network service and the appliance are separate
layers that must not import each other.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import threading

from astara.fabric.errors import (
    FabricInvalidError,
    FabricKernelError,
    FabricNotFoundError,
)

NETNS_RUN_DIR = "/run/netns"
NETLINK_ROUTE = 0
_CLONE_NEWNET = 0x40000000
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_libc = ctypes.CDLL(None, use_errno=True)


def namespace_fd(netns: str) -> int:
    """An open fd of namespace ``netns`` (the caller closes it)."""
    if not _NAME.match(netns):
        raise FabricInvalidError(f"invalid network namespace name {netns!r}")
    try:
        return os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FabricNotFoundError(f"network namespace {netns!r} does not exist") from None


def netlink_socket(netns: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket inside ``netns`` (None: the namespace we run in)."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    target = namespace_fd(netns)
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def enter_and_open() -> None:
        # this thread ends in ``netns``: nothing else ever runs on it
        try:
            if _libc.setns(target, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
        except OSError as exc:
            failed.append(exc)

    try:
        thread = threading.Thread(target=enter_and_open, name=f"fabric-netns-{netns}")
        thread.start()
        thread.join()
    finally:
        os.close(target)
    if failed:
        err = failed[0]
        raise FabricKernelError(
            f"open a netlink socket in namespace {netns!r}", err.errno or 0, str(err)
        ) from err
    return made[0]

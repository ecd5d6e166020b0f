"""Flush connection-tracking entries of addresses the router no longer owns.

When an address (a floating IP, a router address) goes away, NATed flows
through it would otherwise live on in conntrack and keep translating. Every
flow whose original or reply destination is a removed address is deleted.

This runs in-process through libnetfilter_conntrack (the library of the
``conntrack`` tool, installed with it) in a thread inside the appliance's
namespace: one dump per address family, deleting the matches as they come.
The ``conntrack`` command would cost a process per address and direction
(~30 ms on a busy host), which is most of a floating-IP change.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import socket
from collections.abc import Iterable
from functools import cache
from typing import Any

from astara.appliance.plan import IPInterface
from astara.appliance.system.netns import Netns

log = logging.getLogger(__name__)

_CONNTRACK = 1  # NFNL_SUBSYS_CTNETLINK
_Q_DESTROY = 2
_Q_DUMP = 5
_T_ALL = 7
_CB_CONTINUE = 1
# nf_conntrack_attr: destination of the original and of the reply direction
_DESTINATIONS: dict[int, tuple[int, int]] = {socket.AF_INET: (1, 3), socket.AF_INET6: (5, 7)}
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


@cache
def _library() -> Any:
    name = ctypes.util.find_library("netfilter_conntrack") or "libnetfilter_conntrack.so.3"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.nfct_open.restype = ctypes.c_void_p
    lib.nfct_open.argtypes = [ctypes.c_uint8, ctypes.c_uint]
    lib.nfct_close.argtypes = [ctypes.c_void_p]
    lib.nfct_callback_register.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        _CALLBACK,
        ctypes.c_void_p,
    ]
    lib.nfct_query.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.nfct_get_attr.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.nfct_get_attr.restype = ctypes.c_void_p
    return lib


def _flush_family(family: int, targets: set[bytes]) -> int:
    """Runs inside the namespace: delete flows towards ``targets``; return how many."""
    lib = _library()
    size = 4 if family == socket.AF_INET else 16
    dump, destroy = lib.nfct_open(_CONNTRACK, 0), lib.nfct_open(_CONNTRACK, 0)
    if not dump or not destroy:
        raise OSError(ctypes.get_errno(), "cannot open a conntrack netlink socket")
    deleted = 0

    def on_flow(_kind: int, flow: int, _data: int) -> int:
        nonlocal deleted
        for attr in _DESTINATIONS[family]:
            pointer = lib.nfct_get_attr(flow, attr)
            if pointer and ctypes.string_at(pointer, size) in targets:
                if lib.nfct_query(destroy, _Q_DESTROY, flow) == 0:
                    deleted += 1
                break
        return _CB_CONTINUE

    callback = _CALLBACK(on_flow)  # kept alive until the dump is over
    try:
        lib.nfct_callback_register(dump, _T_ALL, callback, None)
        which = ctypes.c_uint32(family)
        if lib.nfct_query(dump, _Q_DUMP, ctypes.byref(which)) != 0:
            raise OSError(ctypes.get_errno(), "conntrack dump failed")
    finally:
        lib.nfct_close(dump)
        lib.nfct_close(destroy)
    return deleted


async def flush_addresses(netns: Netns, addresses: Iterable[IPInterface]) -> None:
    """Delete every flow whose original or reply destination is a removed address.

    Failures are logged, never raised: stale flows time out on their own.
    """
    by_family: dict[int, set[bytes]] = {}
    for address in addresses:
        family = int(socket.AF_INET if address.version == 4 else socket.AF_INET6)
        by_family.setdefault(family, set()).add(address.ip.packed)
    for family, targets in by_family.items():
        try:
            await asyncio.to_thread(netns.call, lambda f=family, t=targets: _flush_family(f, t))
        except OSError as exc:
            log.warning("%s: conntrack flush failed: %s", netns.label, exc)

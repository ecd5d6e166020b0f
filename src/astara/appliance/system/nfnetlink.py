"""Set and map elements of nf_tables, written as one raw nfnetlink batch.

libnftables (``system/nftables.py``) reads a set's elements back from the
kernel before it deletes one of them: on a map of 200 floating IPs that read
is most of a floating-IP change (~15-20 ms). The kernel needs no read: a
``DELSETELEM``/``NEWSETELEM`` message names the table, the set and the key.
This module sends those messages, framed by ``BATCH_BEGIN``/``BATCH_END``, so
every change in one call commits as one transaction or not at all, exactly as
an ``nft -f`` file would.

Only what the firewall's floating maps need: keys and values given as raw
bytes in network order (an IPv4 address is its 4 packed bytes). The socket is
opened inside the namespace (``Netns.call``) and kept; see ``SetElements``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from astara.appliance.errors import CommandError
from astara.appliance.system.netns import Netns

NETLINK_NETFILTER = 12
NFPROTO_INET = 1
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_NEWSETELEM = 12
_NFT_MSG_DELSETELEM = 14
_NFNL_MSG_BATCH_BEGIN = 16
_NFNL_MSG_BATCH_END = 17
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_CREATE = 0x400
_NLA_F_NESTED = 0x8000
# enum nft_set_elem_list_attributes / nft_list_attributes / nft_set_elem_attributes / nft_data
_LIST_TABLE, _LIST_SET, _LIST_ELEMENTS = 1, 2, 3
_LIST_ELEM = 1
_ELEM_KEY, _ELEM_DATA = 1, 2
_DATA_VALUE = 1
_REPLY_TIMEOUT = 1.0  # replies are queued while the batch is sent


@dataclass(frozen=True)
class ElementChange:
    """Delete ``key`` from set ``name`` (``value`` None), or add ``key : value`` to map ``name``."""

    name: str
    key: bytes
    value: bytes | None = None


def _attr(kind: int, payload: bytes, *, nested: bool = False) -> bytes:
    header = struct.pack("=HH", 4 + len(payload), kind | (_NLA_F_NESTED if nested else 0))
    return header + payload + b"\0" * (-len(payload) % 4)


def _message(kind: int, flags: int, seq: int, *, family: int, res_id: int, body: bytes) -> bytes:
    payload = struct.pack("=BB", family, 0) + struct.pack("!H", res_id) + body
    return struct.pack("=LHHLL", 16 + len(payload), kind, flags, seq, 0) + payload


def _batch(kind: int, seq: int) -> bytes:
    """BATCH_BEGIN or BATCH_END: frames the messages of one nf_tables transaction."""
    return _message(kind, _NLM_F_REQUEST, seq, family=0, res_id=_NFNL_SUBSYS_NFTABLES, body=b"")


def _element_message(change: ElementChange, table: str, family: int, seq: int) -> bytes:
    element = _attr(_ELEM_KEY, _attr(_DATA_VALUE, change.key), nested=True)
    if change.value is not None:
        element += _attr(_ELEM_DATA, _attr(_DATA_VALUE, change.value), nested=True)
    body = (
        _attr(_LIST_TABLE, table.encode() + b"\0")
        + _attr(_LIST_SET, change.name.encode() + b"\0")
        + _attr(_LIST_ELEMENTS, _attr(_LIST_ELEM, element, nested=True), nested=True)
    )
    if change.value is None:
        kind, flags = _NFT_MSG_DELSETELEM, _NLM_F_REQUEST | _NLM_F_ACK
    else:
        kind, flags = _NFT_MSG_NEWSETELEM, _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE
    return _message(
        (_NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq, family=family, res_id=0, body=body
    )


def encode_batch(
    changes: Sequence[ElementChange], *, table: str, family: int, first: int = 1
) -> bytes:
    """The batch for ``changes``, in order, numbered from ``first`` (the BATCH_BEGIN)."""
    begin = _batch(_NFNL_MSG_BATCH_BEGIN, first)
    elements = b"".join(
        _element_message(change, table, family, seq)
        for seq, change in enumerate(changes, start=first + 1)
    )
    end_seq = first + len(changes) + 1
    end = _batch(_NFNL_MSG_BATCH_END, end_seq)
    return begin + elements + end


class SetElements:
    """Writes set and map elements in one namespace over a netlink socket kept open.

    The socket stays open on purpose: when an nfnetlink socket closes, the
    kernel waits for the release of everything its transactions deleted (an
    RCU grace period, ~15 ms here), which is what makes a libnftables element
    delete slow. Kept open, a delete costs ~0.1 ms and the release happens in
    the background. Not thread-safe; the firewall serialises its calls.
    """

    def __init__(self, netns: Netns) -> None:
        self._netns = netns
        self._sock: socket.socket | None = None
        self._seq = 0

    def update(
        self, changes: Sequence[ElementChange], *, table: str, family: int = NFPROTO_INET
    ) -> None:
        """Apply ``changes`` to sets of ``table`` as one transaction.

        The kernel handles the batch while it is being sent, so this does not
        block for long. Deleting a key that is absent, adding a key that holds
        another value, or naming a table or set that does not exist fails the
        whole batch: nothing changes, and CommandError says why.
        """
        if not changes:
            return
        try:
            sock = self._socket()
            _drain(sock)  # replies a failed batch left behind
            first = self._seq + 1
            self._seq += len(changes) + 2
            sock.sendall(encode_batch(changes, table=table, family=family, first=first))
            _acknowledged(sock, first + 1, len(changes))
        except TimeoutError as exc:
            self.close()
            raise CommandError(["nfnetlink", table], errno.ETIMEDOUT, "no reply") from exc
        except OSError as exc:
            raise CommandError(["nfnetlink", table], exc.errno or -1, str(exc)) from exc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = self._netns.call(
                lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            )
            sock.bind((0, 0))
            sock.settimeout(_REPLY_TIMEOUT)
            self._sock = sock
        return self._sock


def _drain(sock: socket.socket) -> None:
    sock.setblocking(False)  # MSG_DONTWAIT alone would still wait out the socket's timeout
    try:
        while True:
            sock.recv(65536)
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(_REPLY_TIMEOUT)


def _acknowledged(sock: socket.socket, first: int, count: int) -> None:
    """Read the reply to each element message; raise on the first error the kernel reports."""
    pending = set(range(first, first + count))
    while pending:
        data = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, seq, _pid = struct.unpack_from("=LHHLL", data, offset)
            if kind == _NLMSG_ERROR and seq in pending:
                (code,) = struct.unpack_from("=i", data, offset + 16)
                if code != 0:
                    raise OSError(
                        -code, f"{os.strerror(-code)} (change {seq - first + 1} of {count})"
                    )
                pending.discard(seq)
            offset += max(length + (-length % 4), 16)

"""The echo codec of the status probe: checksum, kernel filters, reply matching."""

from __future__ import annotations

import ipaddress
import struct

from astara.appliance.system import icmp
from astara.appliance.system.netns import Netns


def test_checksum_of_rfc1071_example_and_odd_lengths() -> None:
    # RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement 220d)
    assert icmp.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert icmp.checksum(b"\x01") == icmp.checksum(b"\x01\x00")
    # a packet carrying its own checksum sums to zero
    head = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 7) + b"abc"
    sum_ = icmp.checksum(head)
    assert icmp.checksum(head[:2] + struct.pack("!H", sum_) + head[4:]) == 0


def test_filters_pass_echo_replies_only() -> None:
    (v4,) = struct.unpack("I", icmp._v4_filter())
    assert [t for t in range(32) if not v4 & (1 << t)] == [0]
    words = struct.unpack("8I", icmp._v6_filter())
    assert [t for t in range(256) if not words[t >> 5] & (1 << (t & 31))] == [129]


def _reply(kind: int, ident: int, seq: int) -> bytes:
    return struct.pack("!BBHHH", kind, 0, 0, ident, seq) + b"payload"


def test_a_reply_is_matched_by_source_identifier_and_sequence() -> None:
    pinger = icmp.Pinger(Netns(None))
    ident = pinger._ident
    gw4, gw6 = ipaddress.ip_address("198.51.100.1"), ipaddress.ip_address("2001:db8::1")
    ip_head = bytes([0x45]) + bytes(19)  # IPv4, 20-byte header: a raw socket reads it too
    assert pinger._is_reply(ip_head + _reply(0, ident, 5), "198.51.100.1", gw4, 5)
    assert not pinger._is_reply(ip_head + _reply(0, ident, 4), "198.51.100.1", gw4, 5)
    assert not pinger._is_reply(ip_head + _reply(0, ident ^ 1, 5), "198.51.100.1", gw4, 5)
    assert not pinger._is_reply(ip_head + _reply(8, ident, 5), "198.51.100.1", gw4, 5)
    assert not pinger._is_reply(ip_head + _reply(0, ident, 5), "198.51.100.2", gw4, 5)
    assert not pinger._is_reply(b"", "198.51.100.1", gw4, 5)
    assert not pinger._is_reply(ip_head + b"\0\0", "198.51.100.1", gw4, 5)
    assert pinger._is_reply(_reply(129, ident, 9), "2001:db8::1", gw6, 9)
    assert pinger._is_reply(_reply(129, ident, 9), "2001:db8::1%eth0", gw6, 9)
    assert not pinger._is_reply(_reply(128, ident, 9), "2001:db8::1", gw6, 9)

"""libnftables' sockets land below FD_SETSIZE however many descriptors the agent holds.

libnftables waits with ``select()``; glibc aborts the process for a descriptor of
1024 or more. An agent serving 1,000 appliances held more than that and died so.
"""

from __future__ import annotations

import os
import socket

from astara.appliance.system import nftables


def test_a_socket_opened_inside_the_block_is_below_fd_setsize(many_fds: list[int]) -> None:
    assert nftables.reserve_low_fds() == nftables.RESERVED_FDS
    many_fds += [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    with socket.socket() as outside:
        assert outside.fileno() >= nftables.FD_SETSIZE
    for _ in range(3):  # and again: the reserve is taken back after each block
        with nftables._low_fds(), socket.socket() as inside:
            assert inside.fileno() < nftables.FD_SETSIZE
    assert len(nftables._reserved) == nftables.RESERVED_FDS

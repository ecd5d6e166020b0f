"""Sockets made by ``Netns.socket``: connections accepted from them send without Nagle.

Without TCP_NODELAY an answer written in two parts (uvicorn writes the head,
then the body) waits on the client's delayed ACK: ~40 ms per request on a
kept-alive connection to the appliance API.
"""

from __future__ import annotations

import asyncio
import socket

from astara.appliance.system.netns import Netns


def test_stream_sockets_say_tcp_and_udp_ones_do_not() -> None:
    with Netns(None).socket(socket.AF_INET) as tcp, Netns(None).socket(socket.AF_INET6) as tcp6:
        assert tcp.proto == tcp6.proto == socket.IPPROTO_TCP
    with Netns(None).socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert udp.proto == 0


def test_an_accepted_connection_has_tcp_nodelay() -> None:
    async def scenario() -> int:
        listener = Netns(None).socket(socket.AF_INET)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def accepted(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        try:
            _reader, writer = await asyncio.open_connection(*listener.getsockname())
            nodelay = await asyncio.wait_for(seen, 5)
            writer.close()
            return nodelay
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) != 0

"""The webhook's listening socket: connections it accepts send small responses at once."""

from __future__ import annotations

import asyncio
import socket

from services.storage_listener.webhook import bind


async def test_accepted_connections_have_tcp_nodelay() -> None:
    # Without TCP_NODELAY a response written in pieces waits for the client's delayed ACK, so
    # back-to-back requests on one keep-alive connection take ~40 ms each.
    listening = bind("127.0.0.1", 0)
    port = listening.getsockname()[1]
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=listening)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(seen, 10) != 0
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


def test_the_listening_socket_says_tcp() -> None:
    listening = bind("127.0.0.1", 0)
    with listening:
        assert listening.proto == socket.IPPROTO_TCP
        assert listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

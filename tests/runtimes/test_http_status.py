"""http_status: the bare heartbeat probe the local runtime polls starting servers with."""

from __future__ import annotations

import asyncio
import errno
import socket

from chroma_orch.runtimes.local.launch import _connect_now, http_status
from tests.e2e.service import free_port


def test_connect_now_knows_a_refusal_and_a_connection_at_once() -> None:
    with socket.socket() as refused:
        refused.setblocking(False)
        assert _connect_now(refused, ("127.0.0.1", free_port())) == errno.ECONNREFUSED
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.setblocking(False)
        assert _connect_now(client, server.getsockname()) == 0


async def test_nothing_listening_is_none() -> None:
    assert await http_status("127.0.0.1", free_port(), "/api/v2/heartbeat", 0.5) is None


async def test_a_server_answering_gives_its_status() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await http_status("127.0.0.1", port, "/api/v2/heartbeat", 2.0) == 200

"""A tiny HTTP/1.1 server standing in for a Chroma server: records what reaches it.

Modes: ``echo`` answers 200 with the request body (and some hop-by-hop headers
the proxy must drop), ``close`` reads the request and hangs up without an
answer, ``stream`` sends a first chunk and the rest only after ``release`` is
set. ``first_body_chunk`` is set as soon as any request body bytes arrived;
``receiving`` counts requests whose head arrived and whose body has not ended
(``most_receiving`` is its high-water mark). Answers carry a ``Date`` as Chroma's do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from email.utils import formatdate

import h11


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeUpstream:
    mode: str = "echo"
    requests: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    first_body_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    receiving: int = 0
    most_receiving: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> FakeUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        self._writers.add(writer)
        try:
            while True:
                seen = await self._read_request(conn, reader)
                if seen is None:
                    return
                self.requests.append(seen)
                if self.mode == "close":
                    return
                await self._respond(conn, writer, seen)
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> Seen | None:
        request: h11.Request | None = None
        body = b""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return None
                if isinstance(event, h11.Request):
                    request = event
                    self._receiving(+1)
                elif isinstance(event, h11.Data):
                    body += event.data
                    self.first_body_chunk.set()
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    headers = {k.decode(): v.decode() for k, v in request.headers}
                    return Seen(request.method.decode(), request.target.decode(), headers, body)
        finally:
            if request is not None:
                self._receiving(-1)

    def _receiving(self, delta: int) -> None:
        self.receiving += delta
        self.most_receiving = max(self.most_receiving, self.receiving)

    async def _respond(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, seen: Seen
    ) -> None:
        if self.mode == "stream":
            head = h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")])
            writer.write(conn.send(head) + conn.send(h11.Data(data=b"first;")))
            await writer.drain()
            await self.release.wait()
            writer.write(conn.send(h11.Data(data=b"rest")) + conn.send(h11.EndOfMessage()))
            await writer.drain()
            return
        body = b"echo:" + seen.body
        headers = [
            ("Content-Length", str(len(body))),
            ("Content-Type", "text/plain"),
            ("Server", "fake-chroma"),
            ("Date", formatdate(usegmt=True)),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Secret-Hop", "1"),
            ("X-Upstream", "fake"),
        ]
        writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
        writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        await writer.drain()

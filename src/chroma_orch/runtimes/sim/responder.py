"""The simulated servers' HTTP responder: just enough of Chroma for heartbeats and a
data-plane smoke test, one listening socket per simulated server.

It answers ``GET /api/v2/heartbeat`` (200, Chroma's ``{"nanosecond heartbeat": N}``),
``/api/v2/version``, ``/api/v2/auth/identity``, and listing a database's collections
(``[]``) or counting them (``0``); any other ``/api/v2`` path 501, anything else 404.
HTTP/1.1 with keep-alive; a chunked request body is refused (501) and the connection
closed. ``Listener.close`` drops its open connections too: a crashed server stops
answering at once.

One socket per server, measured (docs/sim-runtime.md): 10,000 listeners cost 10,000
file descriptors and about 1.3 KiB of the process's memory each.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import cast

_COLLECTIONS = re.compile(r"/api/v2/tenants/[^/]+/databases/[^/]+/(collections|collections_count)")
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 16 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 501: "Not Implemented"}


def answer(method: str, path: str, version: str) -> tuple[int, object]:
    """The status and JSON body for a request (no I/O)."""
    path = path.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return (501, _error("NotImplemented")) if path.startswith("/api/v2/") else (404, {})
    if path == "/api/v2/heartbeat":
        return 200, {"nanosecond heartbeat": time.time_ns()}
    if path == "/api/v2/version":
        return 200, version
    if path == "/api/v2/auth/identity":
        return 200, {"user_id": "", "tenant": "default_tenant", "databases": ["default_database"]}
    listed = _COLLECTIONS.fullmatch(path)
    if listed is not None:
        return 200, [] if listed.group(1) == "collections" else 0
    if path.startswith("/api/v2/"):
        return 501, _error("NotImplemented")
    return 404, _error("NotFound")


def _error(kind: str) -> dict[str, str]:
    return {"error": kind, "message": "not simulated by the sim runtime"}


def _response(status: int, body: object, keep_alive: bool, head_only: bool) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
        f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode()
    return head if head_only else head + payload


class _Connection(asyncio.Protocol):
    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.buffer = b""
        self.skip = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, but not always an asyncio.Transport subclass: uvloop's
        # TCPTransport (the service's loop) is not one, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        self.listener.connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.listener.connections.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            if self.skip:  # the rest of a request body
                taken = min(self.skip, len(self.buffer))
                self.buffer, self.skip = self.buffer[taken:], self.skip - taken
                if self.skip:
                    return
            end = self.buffer.find(_HEAD_END)
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    self._send(400, _error("BadRequest"), keep_alive=False, head_only=False)
                return
            head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
            self._handle(head)

    def _handle(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        headers = dict(_header(line) for line in lines[1:] if ":" in line)
        if len(parts) != 3:
            self._send(400, _error("BadRequest"), keep_alive=False, head_only=False)
            return
        method, path, protocol = parts
        if "chunked" in headers.get("transfer-encoding", ""):
            self._send(501, _error("NotImplemented"), keep_alive=False, head_only=False)
            return
        self.skip = int(headers.get("content-length", "0") or 0)
        keep_alive = protocol == "HTTP/1.1" and headers.get("connection") != "close"
        status, body = answer(method, path, self.listener.version)
        self._send(status, body, keep_alive, head_only=method == "HEAD")

    def _send(self, status: int, body: object, keep_alive: bool, head_only: bool) -> None:
        assert self.transport is not None
        self.transport.write(_response(status, body, keep_alive, head_only))
        if not keep_alive:
            self.transport.close()


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip().lower(), value.strip().lower()


@dataclass
class Listener:
    """One simulated server's responder."""

    version: str
    server: asyncio.Server | None = None
    connections: set[asyncio.Transport] = field(default_factory=set)

    async def open(self, host: str, port: int) -> None:
        """Bind ``host:port`` without accepting yet (connections are refused, as by a
        server still starting) until ``self.server.start_serving()``."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Connection(self), host, port, start_serving=False
        )

    @property
    def serving(self) -> bool:
        return self.server is not None and self.server.is_serving()

    def close(self) -> None:
        """Stop listening and drop every open connection (the server is gone)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for transport in list(self.connections):
            transport.abort()
        self.connections.clear()

"""An in-process uvicorn server for WebSocket tests, and small socket helpers."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import uuid
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select
from websockets.asyncio.client import ClientConnection, connect

from chroma_orch.context import AppContext
from chroma_orch.db.models import Event
from chroma_orch.db.outbox import commit, record_event
from chroma_orch.events.stream import EventStream
from tests.conftest import ADMIN_TOKEN
from tests.e2e.service import free_port

Message = dict[str, Any]


class LiveServer:
    """Serves ``app`` (lifespan included) on a free loopback port in this event loop."""

    def __init__(
        self, app: FastAPI, port: int | None = None, send_buffer: int | None = None
    ) -> None:
        """``send_buffer``: SO_SNDBUF of the listening socket, which the connections it
        accepts inherit (Linux), so a test fills a stalled reader's path with little data."""
        self.app = app
        self.port = port or free_port()
        self.send_buffer = send_buffer
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveServer:
        sockets = None
        if self.send_buffer is not None:
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
            listener.bind(("127.0.0.1", self.port))
            sockets = [listener]
        self._task = asyncio.create_task(self.server.serve(sockets))
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("server stopped during start-up")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task

    @property
    def ctx(self) -> AppContext:
        ctx: AppContext = self.app.state.ctx
        return ctx

    @property
    def stream(self) -> EventStream:
        return self.ctx.stream

    def connect(
        self, path: str = "/v1/events", token: str | None = ADMIN_TOKEN, **kwargs: Any
    ) -> connect:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return connect(self.ws_url + path, additional_headers=headers, open_timeout=10, **kwargs)


async def receive(ws: ClientConnection, timeout: float = 10.0) -> Message:
    message: Message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def receive_events(ws: ClientConnection, count: int, timeout: float = 10.0) -> list[Message]:
    """The next ``count`` event frames (heartbeats are skipped)."""
    events: list[Message] = []
    while len(events) < count:
        message = await receive(ws, timeout)
        if message["type"] == "heartbeat":
            continue
        assert message["type"] == "event", message
        events.append(message)
    return events


async def others_within(ws: ClientConnection, seconds: float) -> list[Message]:
    """Frames other than heartbeats received during the next ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    found: list[Message] = []
    while (left := deadline - loop.time()) > 0:
        try:
            message = await receive(ws, left)
        except TimeoutError:
            break
        if message["type"] != "heartbeat":
            found.append(message)
    return found


async def emit(
    ctx: AppContext,
    count: int,
    *,
    tenant_id: uuid.UUID | None = None,
    instance_id: uuid.UUID | None = None,
    size: int = 0,
) -> int:
    """Append ``count`` events in one transaction (as a state change would);
    returns the last seq. ``size`` pads each event's ``after`` with that many bytes."""
    ids = [instance_id or uuid.uuid4() for _ in range(count)]
    async with ctx.sessions() as session:
        for n, event_instance in enumerate(ids):
            after: dict[str, Any] = {"n": n, "phase": "running"}
            if size:  # random, so that permessage-deflate cannot shrink it
                after["pad"] = secrets.token_hex(size // 2)
            record_event(
                session,
                type="test.tick",
                instance_id=event_instance,
                tenant_id=tenant_id,
                after=after,
            )
        await commit(session)
        last = await session.scalar(
            select(func.max(Event.seq)).where(Event.type == "test.tick", Event.instance_id.in_(ids))
        )
    assert last is not None
    return int(last)

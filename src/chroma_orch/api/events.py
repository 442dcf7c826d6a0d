"""WebSocket streams: /v1/events (state diffs, resumable) and live instance logs.

Authenticate with ``Authorization: Bearer <token>``; browsers, which cannot set
headers, offer the subprotocols ``chroma-orch.v1`` and
``chroma-orch.bearer.<token>``, or send ``{"type": "auth", "token": ...}`` as the
first frame. A token never goes in the URL. See docs/events.md for the messages.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from chroma_orch.context import AppContext
from chroma_orch.events.messages import CLOSE_NOT_FOUND, CLOSE_SLOW_CONSUMER
from chroma_orch.events.queries import Scope
from chroma_orch.events.sockets import (
    EventFeed,
    SlowConsumerError,
    accept_authenticated,
    follow_logs,
    timed_sender,
    until_disconnect,
    visible_instance,
)
from chroma_orch.events.stream import get_stream

router = APIRouter(tags=["events"])


async def _close_slow(websocket: WebSocket, last: int | None) -> None:
    reason = "slow consumer" + (f": reconnect with since={last}" if last is not None else "")
    try:
        await websocket.close(CLOSE_SLOW_CONSUMER, reason)
    except (WebSocketDisconnect, RuntimeError):
        pass


@router.websocket("/v1/events")
async def events_socket(
    websocket: WebSocket,
    since: Annotated[int | None, Query(ge=0, description="Resume after this seq.")] = None,
    instance_id: Annotated[uuid.UUID | None, Query(description="Only this instance.")] = None,
) -> None:
    ctx: AppContext = websocket.app.state.ctx
    principal = await accept_authenticated(websocket, ctx)
    if principal is None:
        return
    if instance_id is not None and await visible_instance(ctx, principal, instance_id) is None:
        await websocket.close(CLOSE_NOT_FOUND, "instance not found")
        return
    stream = get_stream(websocket.app)
    subscriber = stream.subscribe(Scope.of(principal, instance_id))
    send = timed_sender(websocket, ctx.settings.events.send_timeout)
    feed = EventFeed(stream, subscriber, send, ctx.sessions, ctx.policy, ctx.settings.events)
    try:
        await until_disconnect(websocket, feed.run(since))
    except SlowConsumerError:
        stream.unsubscribe(subscriber)
        await _close_slow(websocket, feed.last)
    except WebSocketDisconnect:
        pass
    finally:
        stream.unsubscribe(subscriber)


@router.websocket("/v1/instances/{instance_id}/logs/stream")
async def logs_socket(
    websocket: WebSocket,
    instance_id: uuid.UUID,
    tail: Annotated[int, Query(ge=0, le=10000, description="Lines of history first.")] = 100,
) -> None:
    ctx: AppContext = websocket.app.state.ctx
    principal = await accept_authenticated(websocket, ctx)
    if principal is None:
        return
    instance = await visible_instance(ctx, principal, instance_id)
    if instance is None:
        await websocket.close(CLOSE_NOT_FOUND, "instance not found")
        return
    handle = instance.handle or instance.last_handle
    lines = ctx.runtime.follow_logs(str(instance.id), handle, tail)
    send = timed_sender(websocket, ctx.settings.events.send_timeout)
    try:
        await until_disconnect(websocket, follow_logs(lines, send, ctx.settings.events))
        await websocket.close()
    except SlowConsumerError:
        await _close_slow(websocket, None)
    except (WebSocketDisconnect, RuntimeError):
        pass

"""WebSocket streams: /v1/events (state diffs, resumable) and live instance logs.

Authenticate with ``Authorization: Bearer <token>``; browsers, which cannot set
headers, offer the subprotocols ``chroma-orch.v1`` and
``chroma-orch.bearer.<token>``, or send ``{"type": "auth", "token": ...}`` as the
first frame. A token never goes in the URL. A socket lasts only as long as its
token: revoked or expired, the socket is closed with 4401. See docs/events.md.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from chroma_orch.api.event_sockets import (
    EventFeed,
    SlowConsumerError,
    authenticated,
    follow_logs,
    timed_sender,
    until_disconnect,
    visible_instance,
)
from chroma_orch.context import AppContext
from chroma_orch.domain.logs import log_handle
from chroma_orch.events.guard import TokenEndedError, TokenLease
from chroma_orch.events.messages import (
    CLOSE_NOT_FOUND,
    CLOSE_SLOW_CONSUMER,
    CLOSE_UNAUTHORIZED,
    SnapshotMode,
)
from chroma_orch.events.queries import Scope

router = APIRouter(tags=["events"])


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code, reason)
    except (WebSocketDisconnect, RuntimeError):
        pass


def _slow(last: int | None) -> str:
    return "slow consumer" + (f": reconnect with since={last}" if last is not None else "")


@router.websocket("/v1/events")
async def events_socket(
    websocket: WebSocket,
    since: Annotated[int | None, Query(ge=0, description="Resume after this seq.")] = None,
    instance_id: Annotated[uuid.UUID | None, Query(description="Only this instance.")] = None,
    snapshot: Annotated[
        SnapshotMode,
        Query(
            description="full: snapshot and resync carry every visible instance; "
            "none: only their seq (read the instances from GET /v1/instances)."
        ),
    ] = "full",
) -> None:
    ctx: AppContext = websocket.app.state.ctx
    async with authenticated(websocket, ctx, ctx.guard) as lease:
        if lease is not None:
            await _events(websocket, ctx, lease, since, instance_id, snapshot)


async def _events(
    websocket: WebSocket,
    ctx: AppContext,
    lease: TokenLease,
    since: int | None,
    instance_id: uuid.UUID | None,
    snapshot: SnapshotMode,
) -> None:
    principal = lease.principal
    if instance_id is not None and await visible_instance(ctx, principal, instance_id) is None:
        await websocket.close(CLOSE_NOT_FOUND, "instance not found")
        return
    stream = ctx.stream
    subscriber = stream.subscribe(Scope.of(principal, instance_id))
    send = timed_sender(websocket, ctx.settings.events.send_timeout)
    feed = EventFeed(
        stream, subscriber, send, ctx.sessions, ctx.policy, ctx.settings.events, snapshot
    )
    try:
        await until_disconnect(websocket, feed.run(since), lease)
    except SlowConsumerError:
        stream.unsubscribe(subscriber)
        await _close(websocket, CLOSE_SLOW_CONSUMER, _slow(feed.last))
    except TokenEndedError as exc:
        stream.unsubscribe(subscriber)
        await _close(websocket, CLOSE_UNAUTHORIZED, exc.reason)
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
    async with authenticated(websocket, ctx, ctx.guard) as lease:
        if lease is not None:
            await _logs(websocket, ctx, lease, instance_id, tail)


async def _logs(
    websocket: WebSocket, ctx: AppContext, lease: TokenLease, instance_id: uuid.UUID, tail: int
) -> None:
    instance = await visible_instance(ctx, lease.principal, instance_id)
    if instance is None:
        await websocket.close(CLOSE_NOT_FOUND, "instance not found")
        return
    lines = ctx.runtime.follow_logs(str(instance.id), log_handle(instance), tail)
    send = timed_sender(websocket, ctx.settings.events.send_timeout)
    try:
        await until_disconnect(websocket, follow_logs(lines, send, ctx.settings.events), lease)
        await websocket.close()
    except SlowConsumerError:
        await _close(websocket, CLOSE_SLOW_CONSUMER, _slow(None))
    except TokenEndedError as exc:
        await _close(websocket, CLOSE_UNAUTHORIZED, exc.reason)
    except (WebSocketDisconnect, RuntimeError):
        pass

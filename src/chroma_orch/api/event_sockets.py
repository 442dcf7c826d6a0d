"""What one WebSocket does: authenticate, then stream events (or log lines).

A socket holds no database session while it waits: the token check, the
snapshot and each page of backfill use a short session of their own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.api.deps import client_address
from chroma_orch.context import AppContext
from chroma_orch.db.models import Instance
from chroma_orch.domain.auth import authenticate, bearer_from_header
from chroma_orch.domain.instances import InstancePolicy, InstanceService
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.schemas import InstanceRead
from chroma_orch.errors import NotFoundError, TooManyAuthFailuresError, UnauthorizedError
from chroma_orch.events import queries
from chroma_orch.events.guard import SocketGuard, TokenEndedError, TokenLease, TooManySocketsError
from chroma_orch.events.messages import (
    BEARER_SUBPROTOCOL_PREFIX,
    CLOSE_BAD_REQUEST,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNAUTHORIZED,
    SUBPROTOCOL,
    AuthMessage,
    HeartbeatMessage,
    LogEndMessage,
    LogMessage,
    Message,
    ResyncMessage,
    SnapshotMessage,
    SnapshotMode,
)
from chroma_orch.events.stream import EventStream, Subscriber
from chroma_orch.settings import EventsSettings

log = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[None]]


class SlowConsumerError(Exception):
    """A frame could not be handed to the client within ``send_timeout``."""


class AuthFailedError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _offered_token(websocket: WebSocket) -> str | None:
    token = bearer_from_header(websocket.headers.get("authorization"))
    if token is not None:
        return token
    for protocol in websocket.scope.get("subprotocols", []):
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return str(protocol[len(BEARER_SUBPROTOCOL_PREFIX) :])
    return None


async def _first_message_token(websocket: WebSocket, timeout: float) -> str:
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout)
    except TimeoutError as exc:
        raise AuthFailedError(CLOSE_UNAUTHORIZED, "no auth message in time") from exc
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    raw = message.get("text")
    if raw is None:  # a binary frame
        raise AuthFailedError(CLOSE_BAD_REQUEST, 'expected a text frame {"type": "auth", ...}')
    try:
        return AuthMessage.model_validate_json(raw).token
    except ValidationError as exc:
        raise AuthFailedError(CLOSE_BAD_REQUEST, 'expected {"type": "auth", "token": ...}') from exc


async def _verify(ctx: AppContext, lease: TokenLease, ticket: int, client: str | None) -> None:
    """Check the token, counting refusals per client address as the API does."""
    try:
        async with ctx.sessions() as session:
            principal = await authenticate(
                session, lease.token, ctx.tokens, failures=ctx.auth_failures, client=client
            )
            await session.commit()
    except TooManyAuthFailuresError as exc:
        raise AuthFailedError(CLOSE_TRY_AGAIN_LATER, exc.detail or exc.title) from exc
    except UnauthorizedError as exc:
        raise AuthFailedError(CLOSE_UNAUTHORIZED, exc.detail or "invalid token") from exc
    lease.confirm(principal, ticket)
    if lease.reason is not None:  # changed while it was being read
        raise AuthFailedError(CLOSE_UNAUTHORIZED, lease.reason)


async def _lease(websocket: WebSocket, ctx: AppContext, guard: SocketGuard) -> TokenLease:
    token = _offered_token(websocket)
    if token is None:
        token = await _first_message_token(websocket, ctx.settings.events.auth_timeout)
    try:
        lease = guard.open(token)
    except TooManySocketsError as exc:
        raise AuthFailedError(CLOSE_TRY_AGAIN_LATER, str(exc)) from exc
    try:
        client = client_address(websocket)
        await _verify(ctx, lease, guard.ticket(), client)
    except BaseException:
        guard.release(lease)
        raise
    return lease


@asynccontextmanager
async def authenticated(
    websocket: WebSocket, ctx: AppContext, guard: SocketGuard
) -> AsyncIterator[TokenLease | None]:
    """Accept the socket and hold a lease on its token for the block (see
    ``events.guard``). The token comes from the ``Authorization`` header, a
    ``chroma-orch.bearer.<token>`` subprotocol, or an ``auth`` first frame. On
    failure the socket is closed (4401, 4400, or 1013 beyond the token's share of
    sockets) and the block gets None."""
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    lease = None
    try:
        lease = await _lease(websocket, ctx, guard)
    except AuthFailedError as exc:
        await websocket.close(exc.code, exc.reason)
    except WebSocketDisconnect:
        pass
    try:
        yield lease
    finally:
        if lease is not None:
            guard.release(lease)


async def visible_instance(
    ctx: AppContext, principal: Principal, instance_id: uuid.UUID
) -> Instance | None:
    """The instance if ``principal`` may see it and it is not deleted."""
    async with ctx.sessions() as session:
        try:
            instance = await InstanceService(session, principal, ctx.policy).get(instance_id)
        except NotFoundError:
            return None
        finally:
            await session.commit()
    return instance


async def until_disconnect(websocket: WebSocket, work: Awaitable[None], lease: TokenLease) -> None:
    """Run ``work`` until it ends or the client goes away (client frames are ignored);
    ``TokenEndedError`` when the token's ``lease`` ends first."""

    async def drain() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    async def hold() -> None:
        raise TokenEndedError(await lease.ended())

    tasks = [
        asyncio.ensure_future(work),
        asyncio.ensure_future(drain()),
        asyncio.ensure_future(hold()),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


def timed_sender(websocket: WebSocket, timeout: float) -> Send:
    async def send(frame: str) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the send in a
        # task of its own, one per frame per subscriber.
        try:
            async with asyncio.timeout(timeout):
                await websocket.send_text(frame)
        except TimeoutError as exc:
            raise SlowConsumerError from exc

    return send


def _heartbeat(seq: int | None) -> str:
    return HeartbeatMessage(seq=seq, time=datetime.now(UTC)).frame()


class EventFeed:
    """The /v1/events protocol for one subscriber: snapshot or resume, backfill,
    then live events, with heartbeats and resyncs. Sends each event once, in order."""

    def __init__(
        self,
        stream: EventStream,
        subscriber: Subscriber,
        send: Send,
        sessions: async_sessionmaker[AsyncSession],
        policy: InstancePolicy,
        settings: EventsSettings,
        snapshot: SnapshotMode = "full",
    ) -> None:
        self.stream = stream
        self.snapshot_mode: SnapshotMode = snapshot
        """``none``: ``snapshot`` and ``resync`` carry no instances, only ``seq``."""
        self.subscriber = subscriber
        self.send = send
        self.sessions = sessions
        self.policy = policy
        self.settings = settings
        self.last = 0
        """The newest sequence number the client has been brought up to."""

    async def run(self, since: int | None) -> None:
        if since is None:
            await self._snapshot(None)
        else:
            reason = await self._check_cursor(since)
            if reason is not None:
                await self._snapshot(reason)
            else:
                self.last = since
        while True:
            gap = self.subscriber.take_gap()
            if gap is not None:
                upto, overflowed = gap
                if overflowed:
                    log.info("slow subscriber told to resync seq=%s", self.last)
                    await self._snapshot("slow_consumer")
                await self._backfill(upto)
                continue
            item = await self.subscriber.next(self.settings.heartbeat_interval)
            if item is None:
                if self.subscriber.idle:
                    await self.send(_heartbeat(max(self.last, self.stream.cursor)))
                continue
            seq, frame = item
            if seq > self.last:
                await self.send(frame)
                self.last = seq

    async def _snapshot(self, reason: str | None) -> None:
        instances: list[InstanceRead] | None = None
        if self.snapshot_mode == "none":
            seq = await queries.newest_seq(self.sessions)
        else:
            seq, instances = await queries.snapshot(
                self.sessions, self.subscriber.scope, self.policy
            )
        message: Message
        if reason is None:
            message = SnapshotMessage(seq=seq, instances=instances)
        else:
            message = ResyncMessage.model_validate(
                {"reason": reason, "seq": seq, "instances": instances}
            )
        await self.send(message.frame())
        self.last = seq

    async def _check_cursor(self, since: int) -> str | None:
        async with self.sessions() as session:
            oldest, newest = await queries.log_bounds(session)
            await session.commit()
        if newest is None:
            return "cursor_unknown" if since > 0 else None
        if since > newest:
            return "cursor_unknown"
        if oldest is not None and since < oldest - 1:
            return "cursor_expired"
        return None

    async def _backfill(self, upto: int) -> None:
        """Send the visible events in ``(last, upto]`` from the database, in pages."""
        batch = self.settings.fetch_batch
        while self.last < upto:
            async with self.sessions() as session:
                rows = await queries.read_events(
                    session, self.last, batch, upto=upto, scope=self.subscriber.scope
                )
                await session.commit()
            for row in rows:
                await self.send(queries.to_message(row).frame())
                self.last = row.seq
            if len(rows) < batch:
                self.last = max(self.last, upto)


async def follow_logs(
    lines: AsyncIterator[list[str]], send: Send, settings: EventsSettings
) -> None:
    """Send batches of log lines as they come, heartbeats while none do, and
    ``log_end`` when the output ends. Reading waits while the client is slow."""
    queue: asyncio.Queue[list[str] | None] = asyncio.Queue(maxsize=settings.subscriber_queue)

    async def pump() -> None:
        try:
            async for batch in lines:
                await queue.put(batch)
        except Exception:
            log.exception("following logs failed")
        await queue.put(None)

    reader = asyncio.create_task(pump())
    try:
        while True:
            try:
                batch = await asyncio.wait_for(queue.get(), settings.heartbeat_interval)
            except TimeoutError:
                await send(_heartbeat(None))
                continue
            if batch is None:
                await send(LogEndMessage().frame())
                return
            await send(LogMessage(lines=batch).frame())
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        aclose = getattr(lines, "aclose", None)
        if aclose is not None:
            await aclose()

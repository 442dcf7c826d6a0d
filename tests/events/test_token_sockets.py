"""Sockets follow their token: revoking or expiring a token closes its event and
log sockets (4401) within a second, on every replica; a token holds at most
``max_sockets_per_token`` sockets at once on a replica."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from chroma_orch.db.listener import asyncpg_dsn
from chroma_orch.domain.auth import issue_token
from chroma_orch.domain.principal import TENANT_SCOPE
from tests.conftest import ADMIN_TOKEN
from tests.events.conftest import LiveFactory
from tests.events.live import LiveServer, receive, receive_events
from tests.helpers import bearer, create_tenant, wait_for


@pytest.fixture
async def replicas(live_factory: LiveFactory) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    """Two replicas of the service on one database, each with its own listener."""
    async with live_factory() as a, live_factory() as b:
        yield a, b


@pytest.fixture
async def admin(replicas: tuple[LiveServer, LiveServer]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=replicas[0].url, headers=bearer(ADMIN_TOKEN), timeout=30
    ) as client:
        yield client


async def _instance_with_log(
    http: httpx.AsyncClient, token: str, live: LiveServer
) -> tuple[str, str]:
    """An instance of the token's tenant, with a log file to follow; its id and the
    path of its log stream."""
    created = await http.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    instance_id = created.json()["instance"]["id"]
    log_file = live.ctx.settings.data_dir / "logs" / f"{instance_id}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("hello\n")
    return instance_id, f"/v1/instances/{instance_id}/logs/stream"


async def _token_id(http: httpx.AsyncClient, tenant_id: str, name: str = "t") -> str:
    tokens = (await http.get(f"/v1/tenants/{tenant_id}/tokens")).json()
    return str(next(t["id"] for t in tokens if t["name"] == name))


async def _opened(ws: ClientConnection) -> ClientConnection:
    """``ws`` after its first frame (a snapshot, or a log batch), so it is set up."""
    first = await receive(ws)
    assert first["type"] in ("snapshot", "log"), first
    return ws


async def _closed(ws: ClientConnection, timeout: float = 10.0) -> tuple[int, str, datetime]:
    """Read until the server closes ``ws`` (TimeoutError after ``timeout``): its
    close code and reason, and when."""

    async def read_all() -> None:
        while True:
            await receive(ws, timeout)

    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(read_all(), timeout)
    at = datetime.now(UTC)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason, at


async def test_revoking_a_token_closes_its_sockets_on_every_replica(
    replicas: tuple[LiveServer, LiveServer], admin: httpx.AsyncClient
) -> None:
    a, b = replicas
    tenant_id, token = await create_tenant(admin, "acme")
    kept = (await admin.post(f"/v1/tenants/{tenant_id}/tokens", json={"name": "kept"})).json()
    instance_id, logs = await _instance_with_log(admin, token, a)
    async with AsyncExitStack() as stack:
        doomed = [
            await _opened(await stack.enter_async_context(server.connect(path, token=token)))
            for server in (a, b)
            for path in ("/v1/events", logs)
        ]
        other = await _opened(await stack.enter_async_context(b.connect(token=kept["token"])))
        revoked = await admin.delete(f"/v1/tokens/{await _token_id(admin, tenant_id)}")
        assert revoked.status_code == 200, revoked.text
        done = datetime.now(UTC)
        for code, reason, at in await asyncio.gather(*(_closed(ws) for ws in doomed)):
            assert (code, reason) == (4401, "invalid token")
            assert at - done < timedelta(seconds=1)
        # the tenant's other token keeps its socket, and goes on receiving events
        stop = await admin.post(f"/v1/instances/{instance_id}/stop")
        assert stop.status_code == 202, stop.text
        assert (await receive_events(other, 1))[0]["event"] == "instance.desired_changed"
    async with httpx.AsyncClient(base_url=b.url, headers=bearer(token)) as http:
        assert (await http.get("/v1/instances")).status_code == 401


async def test_an_expiring_token_closes_its_sockets_when_it_expires(
    replicas: tuple[LiveServer, LiveServer], admin: httpx.AsyncClient
) -> None:
    a, b = replicas
    tenant_id, _ = await create_tenant(admin, "acme")
    async with a.ctx.sessions() as session:
        row, token = await issue_token(
            session,
            name="short",
            tenant_id=uuid.UUID(tenant_id),
            scopes=[TENANT_SCOPE],
            expires_at=datetime.now(UTC) + timedelta(seconds=60),
        )
        await session.commit()
    _, logs = await _instance_with_log(admin, token, a)
    async with b.connect(token=token) as events, b.connect(logs, token=token) as follow:
        await _opened(events)
        await _opened(follow)
        # the expiry moves (through replica a's database): the sockets follow the new one
        expires_at = datetime.now(UTC) + timedelta(seconds=2)
        async with a.ctx.sessions() as session:
            changed = await session.get(type(row), row.id)
            assert changed is not None
            changed.expires_at = expires_at
            await session.commit()
        for code, reason, at in await asyncio.gather(_closed(events), _closed(follow)):
            assert (code, reason) == (4401, "token expired")
            # never before it expires; soon after (a generous bound: CI machines are busy)
            assert expires_at <= at < expires_at + timedelta(seconds=5)


async def test_a_revocation_missed_while_disconnected_closes_on_reconnect(
    replicas: tuple[LiveServer, LiveServer], admin: httpx.AsyncClient, database_url: str
) -> None:
    """Replica b's notifications stop (its connections are cut) and the revoke sends
    none (triggers off): b re-checks its sockets' tokens once it listens again."""
    _, b = replicas
    tenant_id, token = await create_tenant(admin, "acme")
    token_id = await _token_id(admin, tenant_id)
    async with b.connect(token=token) as events:
        await _opened(events)
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute(
                    "UPDATE api_tokens SET revoked_at = now() WHERE id = $1", uuid.UUID(token_id)
                )
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1",
                b.ctx.settings.reconciler.replica_id,
            )
        finally:
            await conn.close()
        code, reason, _ = await _closed(events, timeout=30)
        assert (code, reason) == (4401, "invalid token")


async def test_a_token_holds_a_bounded_number_of_sockets(
    live_factory: LiveFactory,
) -> None:
    async with (
        live_factory(max_sockets_per_token=3) as live,
        httpx.AsyncClient(base_url=live.url, headers=bearer(ADMIN_TOKEN)) as admin,
    ):
        _, token = await create_tenant(admin, "acme")
        _, logs = await _instance_with_log(admin, token, live)
        async with AsyncExitStack() as stack:
            held = [
                await _opened(await stack.enter_async_context(live.connect(path, token=token)))
                for path in ("/v1/events", "/v1/events", logs)
            ]
            for path in ("/v1/events", logs):
                async with live.connect(path, token=token) as extra:
                    code, reason, _ = await _closed(extra)
                    assert code == 1013
                    assert reason == "too many open sockets for this token (limit 3)"
            async with live.connect(token=ADMIN_TOKEN) as another_token:
                await _opened(another_token)
            await held[0].close()

            async def reopened() -> bool:
                async with live.connect(token=token) as ws:
                    try:
                        first = await receive(ws)
                    except ConnectionClosed:
                        return False
                    return bool(first["type"] == "snapshot")

            await wait_for(reopened, timeout=10)


async def test_a_rescoped_token_or_a_deleted_tenant_closes_the_sockets(
    replicas: tuple[LiveServer, LiveServer], admin: httpx.AsyncClient, database_url: str
) -> None:
    """Changes made outside the API (straight in the database) reach the sockets too."""
    _, b = replicas
    rescoped_tenant, rescoped = await create_tenant(admin, "rescoped")
    deleted_tenant, deleted = await create_tenant(admin, "deleted")
    async with b.connect(token=rescoped) as first, b.connect(token=deleted) as second:
        await _opened(first)
        await _opened(second)
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            await conn.execute(
                """UPDATE api_tokens SET scopes = '["admin"]' WHERE tenant_id = $1""",
                uuid.UUID(rescoped_tenant),
            )
            await conn.execute("DELETE FROM tenants WHERE id = $1", uuid.UUID(deleted_tenant))
        finally:
            await conn.close()
        assert (await _closed(first))[:2] == (4401, "token changed")
        assert (await _closed(second))[:2] == (4401, "invalid token")

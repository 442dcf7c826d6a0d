"""Refused tokens are cheap: counted per client address (429 past a limit) and
remembered briefly by digest, so refusing one again needs no database lookup."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chroma_orch.app import create_app
from chroma_orch.domain.auth import issue_token
from chroma_orch.domain.principal import TENANT_SCOPE
from chroma_orch.settings import LimitsSettings, ReconcilerSettings
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.dataplane.nginx_proc import running_nginx
from tests.e2e.service import running_service
from tests.helpers import bearer, create_tenant, wait_for

AppFactory = Callable[..., Any]


@pytest.fixture
async def make_app(database_url: str, tmp_path: Path) -> AsyncIterator[AppFactory]:
    """Start the API (reconciler off) allowing ``failures`` refused tokens per address."""
    stack = AsyncExitStack()

    async def start(failures: int = 10_000, **overrides: object) -> FastAPI:
        limits = LimitsSettings(
            requests_per_second=10_000,
            burst=10_000,
            max_concurrent_starts=10_000,
            auth_failures=failures,
            auth_failure_window=60,
        )
        settings = make_settings(
            database_url,
            tmp_path / "data",
            reconciler=ReconcilerSettings(enabled=False),
            limits=limits,
            **overrides,
        )
        app = create_app(settings)
        await stack.enter_async_context(app.router.lifespan_context(app))
        return app

    async with stack:
        yield start


def from_address(app: FastAPI, address: str) -> httpx.AsyncClient:
    """A client whose requests come from ``address`` (the connection's peer)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_invalid_tokens_are_limited_per_client_address(make_app: AppFactory) -> None:
    app = await make_app(failures=5)
    instance = f"/i/{uuid.uuid4()}/api/v2/heartbeat"
    async with (
        from_address(app, "203.0.113.1") as attacker,
        from_address(app, "203.0.113.2") as neighbour,
    ):
        assert (await attacker.get("/v1/instances", headers=bearer(ADMIN_TOKEN))).status_code == 200
        for n in range(5):  # the API and the data plane count alike
            url = "/v1/instances" if n % 2 else instance
            assert (await attacker.get(url, headers=bearer(f"co_guess{n}"))).status_code == 401
        for url in ("/v1/instances", instance):
            refused = await attacker.get(url, headers=bearer("co_one-more-guess"))
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["code"] == "too_many_auth_failures"
            assert int(refused.headers["retry-after"]) >= 1
        assert (
            await neighbour.get("/v1/instances", headers=bearer("co_guess0"))
        ).status_code == 401
        # A token this replica has verified lately still works from the limited address.
        assert (await attacker.get("/v1/instances", headers=bearer(ADMIN_TOKEN))).status_code == 200


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(make_app: AppFactory) -> None:
    app = await make_app(failures=2, trusted_proxies=["10.0.0.9"])

    async def status(peer: httpx.AsyncClient, forwarded_for: str) -> int:
        headers = {**bearer("co_guess"), "X-Forwarded-For": forwarded_for}
        return (await peer.get("/v1/instances", headers=headers)).status_code

    async with from_address(app, "10.0.0.9") as proxy, from_address(app, "10.0.0.8") as other:
        assert [await status(proxy, "198.51.100.1") for _ in range(3)] == [401, 401, 429]
        assert await status(proxy, "198.51.100.2") == 401  # another client behind it
        # Not a trusted proxy: what it forwards is ignored, the peer is the client.
        spoofed = [await status(other, f"198.51.100.{n}") for n in range(10, 13)]
        assert spoofed == [401, 401, 429]


def _count_token_lookups(app: FastAPI) -> list[str]:
    """Statements that read the tokens table, as the engine sends them."""
    seen: list[str] = []

    def on_execute(*args: Any) -> None:
        statement = str(args[2])
        if "api_tokens" in statement:
            seen.append(statement)

    event.listen(app.state.ctx.engine.sync_engine, "before_cursor_execute", on_execute)
    return seen


async def test_a_refused_token_is_refused_again_without_a_lookup(make_app: AppFactory) -> None:
    app = await make_app()
    lookups = _count_token_lookups(app)
    instance = f"/i/{uuid.uuid4()}/api/v2/heartbeat"
    async with from_address(app, "203.0.113.1") as client:
        for url in ("/v1/instances", instance):
            for _ in range(20):
                assert (await client.get(url, headers=bearer("co_wrong"))).status_code == 401
    assert len(lookups) == 1  # the first refusal only


async def test_a_token_created_after_a_refusal_works_at_once(make_app: AppFactory) -> None:
    """The refusal of a token is forgotten as soon as a token with its digest is
    created (here as another replica or the CLI would: straight in the database)."""
    app = await make_app()
    async with from_address(app, "203.0.113.1") as client:
        client.headers.update(bearer(ADMIN_TOKEN))
        tenant_id, _ = await create_tenant(client, "acme")
        secret = "co_created-after-it-was-refused-0123456789abcdef"
        assert (await client.get("/v1/instances", headers=bearer(secret))).status_code == 401
        async with app.state.ctx.sessions() as session:
            await issue_token(
                session,
                name="late",
                tenant_id=uuid.UUID(tenant_id),
                scopes=[TENANT_SCOPE],
                token=secret,
            )
            await session.commit()

        async def accepted() -> bool:
            response = await client.get("/v1/instances", headers=bearer(secret))
            return response.status_code == 200

        await wait_for(accepted, timeout=5, interval=0.01)


async def _socket_close(url: str, token: str, source: str) -> tuple[int, str]:
    """Open the event socket from ``source`` with ``token``; how the service closed it."""
    async with connect(url, additional_headers=bearer(token), local_addr=(source, 0)) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def test_event_sockets_count_refused_tokens_per_address(
    database_url: str, tmp_path: Path
) -> None:
    """WebSockets share the per-address count of refused tokens with REST."""
    env = {"CHROMA_ORCH_LIMITS__AUTH_FAILURES": "3"}
    async with running_service(database_url, tmp_path / "data", **env) as service:
        url = service.url.replace("http://", "ws://") + "/v1/events"
        for n in range(3):
            assert await _socket_close(url, f"co_guess{n}", "127.0.0.1") == (4401, "invalid token")
        code, reason = await _socket_close(url, "co_one-more-guess", "127.0.0.1")
        assert code == 1013, reason
        assert "invalid tokens" in reason.lower() or "too many" in reason.lower(), reason
        assert (await _socket_close(url, "co_guess0", "127.0.0.2"))[0] == 4401  # a neighbour


def _from(source: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=source), timeout=30)


async def test_behind_nginx_one_guesser_does_not_lock_out_its_neighbours(
    database_url: str, tmp_path: Path
) -> None:
    """By default the service trusts Nginx beside it (loopback) to name the client:
    a client through Nginx that guesses tokens is limited, one next to it is not."""
    env = {"CHROMA_ORCH_LIMITS__AUTH_FAILURES": "3"}
    async with (
        running_service(database_url, tmp_path / "data", **env) as service,
        running_nginx(service.port) as nginx,
    ):
        async with service.client() as admin:
            _, token = await create_tenant(admin, "acme")
        url = f"{nginx.url}/v1/instances"
        async with _from("127.0.0.2") as guesser, _from("127.0.0.3") as neighbour:
            answers = [
                (await guesser.get(url, headers=bearer(f"co_guess{n}"))).status_code
                for n in range(4)
            ]
            mine = await neighbour.get(url, headers=bearer(token))
            wrong = await neighbour.get(url, headers=bearer("co_typo"))
    assert answers == [401, 401, 401, 429], answers
    assert mine.status_code == 200, mine.text
    assert wrong.status_code == 401, wrong.text

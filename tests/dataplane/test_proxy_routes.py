"""The built-in proxy and the Nginx auth route against a fake upstream server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from chroma_orch.dataplane import get_dataplane
from chroma_orch.db.models import Event, Instance
from chroma_orch.domain.auth import hash_token
from chroma_orch.telemetry.metrics import REGISTRY
from tests.conftest import ADMIN_TOKEN
from tests.dataplane.conftest import Tenancy, set_route
from tests.dataplane.fake_upstream import FakeUpstream
from tests.e2e.service import free_port
from tests.helpers import bearer, wait_for


@pytest.fixture
async def anon(api_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no credentials of its own."""
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def test_forwards_method_path_query_and_body_without_credentials_or_hop_headers(
    anon: httpx.AsyncClient, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream
) -> None:
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    proxied_before = REGISTRY.get_sample_value(
        "chroma_orch_proxied_requests_total", {"status": "2xx"}
    )
    response = await anon.post(
        f"/i/{tenancy.instance_id}/api/v2/tenants/x%2Fy/things?limit=3&q=a%20b",
        content=b'{"k": 1}',
        headers={
            **bearer(tenancy.token),
            "X-Chroma-Token": "also-secret",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic eDp5",
            "X-Custom": "kept",
        },
    )
    assert response.status_code == 200, response.text
    assert response.content == b'echo:{"k": 1}'
    assert response.headers["x-upstream"] == "fake"
    proxied = REGISTRY.get_sample_value("chroma_orch_proxied_requests_total", {"status": "2xx"})
    assert proxied == (proxied_before or 0) + 1
    for hop in ("keep-alive", "x-secret-hop"):
        assert hop not in response.headers
    [seen] = upstream.requests
    assert (seen.method, seen.target) == ("POST", "/api/v2/tenants/x%2Fy/things?limit=3&q=a%20b")
    assert seen.headers["x-custom"] == "kept"
    assert seen.headers["content-length"] == "8"
    for dropped in (
        "authorization",
        "x-chroma-token",
        "x-drop-me",
        "keep-alive",
        "te",
        "proxy-authorization",
    ):
        assert dropped not in seen.headers, dropped


@pytest.mark.parametrize("how", ["x-chroma-token", "admin"])
async def test_x_chroma_token_and_admin_token_are_accepted(
    anon: httpx.AsyncClient, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream, how: str
) -> None:
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    headers = {"X-Chroma-Token": tenancy.token} if how == "x-chroma-token" else bearer(ADMIN_TOKEN)
    response = await anon.get(f"/i/{tenancy.instance_id}/api/v2/heartbeat", headers=headers)
    assert response.status_code == 200
    assert upstream.requests[0].method == "GET"
    assert "content-length" not in upstream.requests[0].headers  # no body invented


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer co_wrong"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"X-Chroma-Token": "co_wrong"},
    ],
)
async def test_missing_or_wrong_token_is_401_and_nothing_is_forwarded(
    anon: httpx.AsyncClient,
    api_app: FastAPI,
    tenancy: Tenancy,
    upstream: FakeUpstream,
    headers: dict[str, str],
) -> None:
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    response = await anon.post(
        f"/i/{tenancy.instance_id}/api/v2/x", content=b"data", headers=headers
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert upstream.requests == []


async def test_a_tokens_stored_digest_is_not_a_token(
    anon: httpx.AsyncClient, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream
) -> None:
    """The database and the change notifications carry tokens' digests; a digest
    must never open anything, even while the token it came from is cached."""
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    url = f"/i/{tenancy.instance_id}/api/v2/heartbeat"
    assert (await anon.get(url, headers=bearer(tenancy.token))).status_code == 200  # cached
    digest = hash_token(tenancy.token)
    for headers in (bearer(digest), {"X-Chroma-Token": digest}):
        assert (await anon.get(url, headers=headers)).status_code == 401
    assert (await anon.get("/v1/instances", headers=bearer(digest))).status_code == 401
    assert len(upstream.requests) == 1


async def test_another_tenants_instance_is_404(
    anon: httpx.AsyncClient, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream
) -> None:
    await set_route(api_app, tenancy.other_instance_id, "running", upstream.port)
    for instance in (tenancy.other_instance_id, str(uuid.uuid4()), "not-a-uuid"):
        response = await anon.get(f"/i/{instance}/api/v2/heartbeat", headers=bearer(tenancy.token))
        assert response.status_code == 404, instance
        assert response.json()["code"] == "not_found"
    assert upstream.requests == []


async def test_instance_not_running_is_503_with_retry_after(
    anon: httpx.AsyncClient, api_app: FastAPI, tenancy: Tenancy
) -> None:
    for phase, port in (("pending", None), ("stopped", None), ("stopping", free_port())):
        await set_route(api_app, tenancy.instance_id, phase, port)
        get_dataplane(api_app).access.forget(uuid.UUID(tenancy.instance_id))
        response = await anon.get(
            f"/i/{tenancy.instance_id}/api/v2/heartbeat", headers=bearer(tenancy.token)
        )
        assert response.status_code == 503, phase
        assert response.headers["retry-after"] == "5"
        assert response.json()["code"] == "instance_not_running"


async def test_upstream_failing_mid_request_is_502_problem(
    anon: httpx.AsyncClient, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream
) -> None:
    upstream.mode = "close"
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    response = await anon.post(
        f"/i/{tenancy.instance_id}/api/v2/x", content=b"abc", headers=bearer(tenancy.token)
    )
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "upstream_failed"
    assert len(upstream.requests) == 1  # it did reach the server, which then failed

    await set_route(api_app, tenancy.instance_id, "running", free_port())  # nothing listens
    get_dataplane(api_app).access.forget(uuid.UUID(tenancy.instance_id))
    response = await anon.get(
        f"/i/{tenancy.instance_id}/api/v2/heartbeat", headers=bearer(tenancy.token)
    )
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_failed"


async def test_a_cached_route_follows_a_moved_or_stopped_instance(
    anon: httpx.AsyncClient, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream
) -> None:
    """No event reaches the cache here: the refused connection alone makes the
    proxy read the route again."""
    url = f"/i/{tenancy.instance_id}/api/v2/heartbeat"
    old = await FakeUpstream().start()
    await set_route(api_app, tenancy.instance_id, "running", old.port)
    assert (await anon.get(url, headers=bearer(tenancy.token))).status_code == 200
    await old.stop()
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    assert (await anon.get(url, headers=bearer(tenancy.token))).status_code == 200
    assert len(upstream.requests) == 1

    await upstream.stop()
    await set_route(api_app, tenancy.instance_id, "stopped", None)
    response = await anon.get(url, headers=bearer(tenancy.token))
    assert response.status_code == 503
    assert "retry-after" in response.headers


async def test_route_cache_is_dropped_when_an_event_arrives(
    anon: httpx.AsyncClient, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream
) -> None:
    url = f"/i/{tenancy.instance_id}/api/v2/heartbeat"
    hub = api_app.state.ctx.hub
    async with api_app.state.ctx.sessions() as session:
        newest = await session.scalar(select(func.max(Event.seq)))
    await wait_for(lambda: _true(hub.latest_seq >= (newest or 0)))  # the fixture's events
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    assert (await anon.get(url, headers=bearer(tenancy.token))).status_code == 200
    await set_route(api_app, tenancy.instance_id, "stopping", upstream.port)
    # Still cached: the server answers while it stops.
    assert (await anon.get(url, headers=bearer(tenancy.token))).status_code == 200
    hub.notify(f"{hub.latest_seq + 1} {tenancy.instance_id}")
    assert (await anon.get(url, headers=bearer(tenancy.token))).status_code == 503


async def test_nginx_auth_route(
    anon: httpx.AsyncClient, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream
) -> None:
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    path = "/internal/dataplane/auth"
    ok = await anon.get(
        path, headers={**bearer(tenancy.token), "X-Chroma-Instance": tenancy.instance_id}
    )
    assert ok.status_code == 200
    assert ok.headers["x-chroma-upstream"] == f"127.0.0.1:{upstream.port}"
    by_uri = await anon.get(
        path,
        headers={
            "X-Chroma-Token": tenancy.token,
            "X-Original-URI": f"/i/{tenancy.instance_id}/api/v2/heartbeat?x=1",
        },
    )
    assert by_uri.headers["x-chroma-upstream"] == f"127.0.0.1:{upstream.port}"
    denied = {
        401: {"Authorization": "Bearer co_nope", "X-Chroma-Instance": tenancy.instance_id},
        404: {**bearer(tenancy.other_token), "X-Chroma-Instance": tenancy.instance_id},
    }
    for status, headers in denied.items():
        response = await anon.get(path, headers=headers)
        assert response.status_code == status
        assert "x-chroma-upstream" not in response.headers
    await set_route(api_app, tenancy.other_instance_id, "stopped", None)
    stopped = await anon.get(
        path,
        headers={**bearer(tenancy.other_token), "X-Chroma-Instance": tenancy.other_instance_id},
    )
    assert stopped.status_code == 503
    assert upstream.requests == []


async def test_activity_is_recorded_in_one_batched_write(
    anon: httpx.AsyncClient, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream
) -> None:
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    await set_route(api_app, tenancy.other_instance_id, "running", upstream.port)
    plane = get_dataplane(api_app)
    for _ in range(3):
        for instance, token in (
            (tenancy.instance_id, tenancy.token),
            (tenancy.other_instance_id, tenancy.other_token),
        ):
            response = await anon.get(f"/i/{instance}/api/v2/heartbeat", headers=bearer(token))
            assert response.status_code == 200
    assert plane.activity.pending == 2
    assert await _last_activity(api_app) == {
        tenancy.instance_id: None,
        tenancy.other_instance_id: None,
    }
    assert await plane.activity.run_once() == 2
    seen = await _last_activity(api_app)
    assert all(at is not None for at in seen.values())
    assert await plane.activity.run_once() == 0


async def _last_activity(app: FastAPI) -> dict[str, object]:
    async with app.state.ctx.sessions() as session:
        rows = await session.execute(select(Instance.id, Instance.last_activity_at))
        return {str(row.id): row.last_activity_at for row in rows}


async def _true(value: bool) -> bool:
    return value

"""Bodies stream through the built-in proxy both ways (the app served by uvicorn)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tests.dataplane.conftest import Tenancy, set_route
from tests.dataplane.fake_upstream import FakeUpstream
from tests.e2e.service import free_port
from tests.helpers import bearer, wait_for


@pytest.fixture
async def served(api_app: FastAPI) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(
        api_app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await wait_for(started, timeout=10)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_response_body_is_relayed_before_the_upstream_finishes(
    served: str, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream
) -> None:
    upstream.mode = "stream"
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    async with (
        httpx.AsyncClient(base_url=served, timeout=10) as http,
        http.stream(
            "GET", f"/i/{tenancy.instance_id}/api/v2/big", headers=bearer(tenancy.token)
        ) as response,
    ):
        assert response.status_code == 200
        chunks = response.aiter_raw()
        first = await asyncio.wait_for(anext(chunks), 5)
        assert first == b"first;"  # the upstream is still holding the rest back
        upstream.release.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert first + rest == b"first;rest"


async def test_request_body_reaches_the_upstream_while_the_client_still_sends(
    served: str, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream
) -> None:
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)

    async def body() -> AsyncIterator[bytes]:
        yield b"part1;"
        # A proxy that buffered the whole body would never let this happen.
        await asyncio.wait_for(upstream.first_body_chunk.wait(), 5)
        yield b"part2"

    async with httpx.AsyncClient(base_url=served, timeout=10) as http:
        response = await http.post(
            f"/i/{tenancy.instance_id}/api/v2/add", content=body(), headers=bearer(tenancy.token)
        )
    assert response.status_code == 200, response.text
    assert response.content == b"echo:part1;part2"
    assert upstream.requests[0].headers.get("transfer-encoding") == "chunked"

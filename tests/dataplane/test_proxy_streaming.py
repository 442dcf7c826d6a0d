"""Bodies stream through the built-in proxy both ways (the app served by uvicorn)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.dataplane.conftest import Tenancy, set_route
from tests.dataplane.fake_upstream import FakeUpstream
from tests.helpers import bearer, wait_for


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


async def test_a_client_that_hangs_up_mid_body_costs_one_info_line(
    served: str,
    api_app: FastAPI,
    tenancy: Tenancy,
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    host, port = served.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /i/{tenancy.instance_id}/api/v2/add HTTP/1.1\r\nHost: proxy\r\n"
        f"Authorization: Bearer {tenancy.token}\r\nContent-Length: 1000\r\n\r\npart".encode()
    )
    await asyncio.wait_for(upstream.first_body_chunk.wait(), 5)
    writer.close()  # 4 of 1000 bytes sent

    def service_lines() -> list[logging.LogRecord]:
        quiet = ("httpx", "uvicorn.access")  # the test's own client; one line per answer
        return [r for r in caplog.records if r.name not in quiet and r.levelno >= logging.INFO]

    async def logged() -> list[logging.LogRecord]:
        return service_lines()

    await wait_for(logged, timeout=10)

    async def upstream_let_go() -> bool:
        return upstream.receiving == 0

    await wait_for(upstream_let_go, timeout=10)
    async with httpx.AsyncClient(base_url=served, timeout=10) as http:  # and life goes on
        ok = await http.get(f"/i/{tenancy.instance_id}/x", headers=bearer(tenancy.token))
    assert ok.status_code == 200
    [line] = service_lines()
    assert line.levelno == logging.INFO
    assert line.exc_info is None
    assert line.getMessage().startswith("client closed the connection mid-request")


async def test_a_proxied_answer_has_one_date_and_one_server_header(
    served: str, api_app: FastAPI, tenancy: Tenancy, upstream: FakeUpstream
) -> None:
    await set_route(api_app, tenancy.instance_id, "running", upstream.port)
    async with httpx.AsyncClient(base_url=served, timeout=10) as http:
        response = await http.get(f"/i/{tenancy.instance_id}/x", headers=bearer(tenancy.token))
    assert response.status_code == 200
    assert response.headers["x-upstream"] == "fake"  # which sends its own Date and Server
    assert len(response.headers.get_list("date")) == 1
    assert response.headers.get_list("server") == ["uvicorn"]

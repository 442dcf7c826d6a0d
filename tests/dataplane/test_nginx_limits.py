"""Nginx's share per client: one address with many requests to instances in
progress (here slow bodies to its own instance) gets 429 past its share, while
another client is served as usual."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.dataplane.nginx_proc import running_nginx
from tests.e2e.service import running_instance, running_service
from tests.helpers import bearer

PER_CLIENT = 128  # deploy/nginx.conf: limit_conn chroma_orch_per_client
HEARTBEAT = "/api/v2/heartbeat"
COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections"


async def _hold(host: str, port: int, path: str, token: str) -> asyncio.StreamWriter:
    """A request from 127.0.0.2 whose body never comes: it stays in progress."""
    _, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.2", 0))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
    )
    await writer.drain()
    return writer


async def test_one_address_cannot_take_nginx_from_the_others(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        running_service(database_url, tmp_path / "data") as service,
        running_nginx(service.port) as nginx,
    ):
        token, instance_id = await running_instance(service)
        base = f"{nginx.url}/i/{instance_id}"
        host, port = "127.0.0.1", int(nginx.url.rsplit(":", 1)[1])
        path = (
            f"/i/{instance_id}/api/v2/tenants/default_tenant/databases/default_database/collections"
        )
        held = [await _hold(host, port, path, token) for _ in range(PER_CLIENT)]
        try:
            transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
            async with httpx.AsyncClient(transport=transport, timeout=30) as same:
                refused = await same.get(base + HEARTBEAT, headers=bearer(token))
            transport = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
            async with httpx.AsyncClient(transport=transport, timeout=30) as other:
                served = await other.get(base + HEARTBEAT, headers=bearer(token))
        finally:
            for writer in held:
                writer.close()
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "client_busy"
    assert refused.headers["retry-after"] == "1"
    assert served.status_code == 200, served.text

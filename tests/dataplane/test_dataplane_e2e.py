"""End to end: real Chroma clients through real Nginx (deploy/nginx.conf) and through
the built-in proxy of the real service under uvicorn, to real Chroma servers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pwd
from collections.abc import AsyncIterator, Sequence
from typing import Any

import chromadb
import httpx
import psutil
import pytest
from chromadb.config import Settings
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_TOKEN
from tests.dataplane.nginx_proc import WORKERS, Nginx, running_nginx
from tests.e2e.service import Service, hold_port, port_is_open, running_instance
from tests.helpers import bearer, create_tenant, wait_for

EMBEDDINGS: list[Sequence[float]] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
QUERY: list[Sequence[float]] = [[0.0, 0.9, 0.1]]


def _client(base: str, token: str) -> Any:
    settings = Settings(anonymized_telemetry=False)  # the client mutates it
    return chromadb.HttpClient(host=base, headers=bearer(token), settings=settings)


@pytest.fixture
async def nginx(service: Service) -> AsyncIterator[Nginx]:
    ports = service.env["CHROMA_ORCH_LOCAL__PORT_RANGE"]
    async with running_nginx(service.port, tenant_ports=ports) as proc:
        yield proc


def _write_and_query(base: str, token: str, collection: str) -> list[str]:
    client = _client(base, token)
    docs = client.get_or_create_collection(collection)
    docs.add(ids=["a", "b", "c"], embeddings=EMBEDDINGS, documents=["alpha", "beta", "gamma"])
    ids: list[str] = docs.query(query_embeddings=QUERY, n_results=1)["ids"][0]
    return ids


def _collections(base: str, token: str) -> dict[str, int]:
    client = _client(base, token)
    return {c.name: c.count() for c in client.list_collections()}


def _intrude(base: str, token: str) -> str | None:
    """Try to read and write with ``token``; the error, or None if it worked."""
    try:
        client = _client(base, token)
        client.get_or_create_collection("intruder").add(ids=["x"], embeddings=[[1.0, 1.0, 1.0]])
    except Exception as exc:  # whatever the client makes of a 401/404
        return f"{type(exc).__name__}: {exc}"
    return None


async def _next_event(ws: ClientConnection, instance_id: str, phase: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
        after = frame.get("after") or {}
        if frame["type"] == "event" and frame["instance_id"] == instance_id:
            if after.get("phase") == phase:
                return frame


async def test_chroma_clients_through_nginx_and_the_builtin_proxy(
    service: Service, nginx: Nginx
) -> None:
    async with service.client() as admin:
        _, token = await create_tenant(admin, "acme")
        _, other_token = await create_tenant(admin, "globex")
    async with service.client(token) as http:
        created = await http.post("/v1/instances", json={"name": "main"})
        instance_id = created.json()["instance"]["id"]
        wait = f"/v1/instances/{instance_id}/wait"
        running = (await http.get(wait, params={"phase": "running"})).json()
        assert running["phase"] == "running", running
        assert running["url"] == f"{service.url}/i/{instance_id}"
        bases = {"builtin": running["url"], "nginx": f"{nginx.url}/i/{instance_id}"}

        for name, base in bases.items():
            assert await asyncio.to_thread(_write_and_query, base, token, f"docs_{name}") == ["b"]
        expected = {"docs_builtin": 3, "docs_nginx": 3}
        assert await asyncio.to_thread(_collections, bases["nginx"], token) == expected
        # Nginx cached its authorisation: the backend was asked once per 5 s, not
        # once per request.
        proxied = nginx.log("access.log").count(f"/i/{instance_id}/")
        asked = service.log_path.read_text().count("/internal/dataplane/auth")
        assert proxied >= 8
        assert 1 <= asked < proxied / 2, (proxied, asked)

        # Wrong and foreign tokens are refused on both paths; nothing changes.
        async with httpx.AsyncClient(timeout=30) as raw:
            for base in bases.values():
                heartbeat = f"{base}/api/v2/heartbeat"
                assert (await raw.get(heartbeat)).status_code == 401
                assert (await raw.get(heartbeat, headers=bearer("co_wrong"))).status_code == 401
                foreign = await raw.get(heartbeat, headers=bearer(other_token))
                assert foreign.status_code == 404
                assert foreign.headers["content-type"] == "application/problem+json"
                assert (await raw.get(heartbeat, headers=bearer(token))).status_code == 200
        for base in bases.values():
            for bad in ("co_wrong", other_token):
                assert await asyncio.to_thread(_intrude, base, bad) is not None
        assert await asyncio.to_thread(_collections, running["url"], token) == expected
        assert await asyncio.to_thread(_collections, running["url"], ADMIN_TOKEN) == expected

        # Vector traffic through Nginx goes straight to the Chroma server.
        old_port = running["endpoint"]["port"]
        assert f"upstream=127.0.0.1:{old_port}" in nginx.log("access.log")

        # The event stream (WebSocket) through Nginx sees the stop.
        ws_url = nginx.url.replace("http://", "ws://") + "/v1/events"
        async with connect(ws_url, additional_headers=bearer(token)) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert first["type"] == "snapshot"
            await http.post(f"/v1/instances/{instance_id}/stop")
            await _next_event(ws, instance_id, "stopped")
        stopped = (await http.get(wait, params={"phase": "stopped"})).json()
        assert stopped["phase"] == "stopped"

        async with httpx.AsyncClient(timeout=30) as raw:
            for base in bases.values():
                response = await raw.get(f"{base}/api/v2/heartbeat", headers=bearer(token))
                assert response.status_code == 503, (base, response.text)
                assert int(response.headers["retry-after"]) > 0

        # Restarted on another port: both paths find it, nothing reconfigured.
        with hold_port(old_port):
            await http.post(f"/v1/instances/{instance_id}/start")
            again = (await http.get(wait, params={"phase": "running"})).json()
        assert again["phase"] == "running"
        assert again["endpoint"]["port"] != old_port
        for base in bases.values():
            assert await asyncio.to_thread(_collections, base, token) == expected

    for log in ("access.log", "error.log"):
        text = nginx.log(log)
        for secret in (token, other_token, ADMIN_TOKEN):
            assert secret not in text
    assert not port_is_open("127.0.0.1", old_port)


async def _cache_files(nginx: Nginx) -> list[bytes]:
    cache = nginx.prefix / "auth_cache"
    found = []
    for path in cache.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # a temporary file renamed meanwhile
            if path.is_file():
                found.append(path.read_bytes())
    return found


async def _logged(nginx: Nginx, line: str) -> bool:
    return line in nginx.log("access.log")


async def test_nginx_workers_unprivileged_no_token_on_disk_paths_logged_as_sent(
    service: Service, nginx: Nginx
) -> None:
    token, instance_id = await running_instance(service)
    # Not canonical: %68 is "h", and Nginx routes by the decoded, normalised path.
    sent = f"/i/{instance_id}/api/v2/%68eartbeat"
    async with httpx.AsyncClient(base_url=nginx.url, timeout=30) as raw:
        for headers in (bearer(token), {"X-Chroma-Token": token}):
            heartbeat = await raw.get(f"/i/{instance_id}/api/v2/heartbeat", headers=headers)
            assert heartbeat.status_code == 200
        await raw.get(sent, params={"q": "1"}, headers=bearer(token))  # Chroma's 404
        # Larger than client_body_buffer_size: buffered in a temp file by a worker.
        big = await raw.post("/v1/tenants", content=b"{" * (2 << 20), headers=bearer(token))
        assert big.headers["content-type"] == "application/problem+json", big.status_code

    # The workers (and cache processes) run as the configured user, never root.
    children = psutil.Process(nginx.pid).children()
    assert children
    expected = pwd.getpwnam(WORKERS).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert {child.uids().real for child in children} == {expected}

    # The auth cache works, and its files hold a digest of the credentials, never them.
    files = await wait_for(lambda: _cache_files(nginx))
    digest = hashlib.sha256(f"Bearer {token}\n".encode()).hexdigest().encode()
    assert any(digest in data for data in files)
    assert all(token.encode() not in data for data in files)

    # The access log names the path as it was sent, without the query string.
    await wait_for(lambda: _logged(nginx, f'"GET {sent} HTTP/1.1" 404'))
    access = nginx.log("access.log")
    assert "q=1" not in access
    assert token not in access
    errors = nginx.log("error.log")
    assert "request body is buffered to a temporary file" in errors  # the big one
    assert "[crit]" not in errors, errors
    assert "Permission denied" not in errors, errors


async def test_an_id_the_map_cannot_read_never_comes_from_a_header_of_the_client(
    service: Service, nginx: Nginx
) -> None:
    """A percent-encoded instance id: Nginx routes by the decoded path, its map of the
    raw path finds no id, and the backend reads the id from ``X-Original-URI``, which
    Nginx sets to the path as sent. Before, the client's own ``X-Original-URI`` went
    through to that decision: a request for one instance was answered by the server of
    the instance the header named (one the token may reach, so no tenant crossed)."""
    token_a, a = await running_instance(service, "acme")
    token_b, b = await running_instance(service, "other")
    encoded = f"%{ord(a[0]):x}{a[1:]}"  # the same id, its first character encoded
    path = f"/i/{encoded}/api/v2/heartbeat"
    async with httpx.AsyncClient(base_url=nginx.url, timeout=30) as raw:
        own = await raw.get(path, headers=bearer(token_a))
        assert own.status_code == 200, own.text  # the built-in proxy, by the decoded path
        forged = {**bearer(token_b), "X-Original-URI": f"/i/{b}/api/v2/heartbeat"}
        other = await raw.get(path, headers=forged)
    assert other.status_code == 404, other.text  # instance a is not the token's
    assert other.headers.get("content-type") == "application/problem+json"

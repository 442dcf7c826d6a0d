"""PostgreSQL restarted under a running service: while it is down, requests that need
it get a 503 problem+json (liveness still answers); once it is back the service
reconnects by itself (no restart) and carries out work asked for during and after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chroma_orch.db.embedded import EmbeddedPostgres
from tests.chaos.cluster import (
    allocated_ports,
    assert_local_invariants,
    kill_servers,
    wait_converged,
)
from tests.conftest import ADMIN_TOKEN
from tests.e2e.service import Service, chroma_processes
from tests.helpers import create_tenant, wait_for, wait_phase


@pytest.fixture
def cluster(pg_cluster: EmbeddedPostgres | None) -> EmbeddedPostgres:
    if pg_cluster is None:
        pytest.skip("needs the embedded cluster: CHROMA_ORCH_TEST_DATABASE_URL points elsewhere")
    return pg_cluster


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    svc = Service(database_url, tmp_path / "data")
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()
        kill_servers(svc.data_dir)


async def _ready(service: Service) -> bool:
    async with service.client() as http:
        try:
            return (await http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False


def _summary(response: httpx.Response) -> dict[str, Any]:
    kind = response.headers.get("content-type", "")
    body = response.json() if "json" in kind else response.text[:200]
    return {"status": response.status_code, "type": kind, "body": body}


class Outage:
    """Stops the cluster on entry and starts it again on exit, whatever happened."""

    def __init__(self, cluster: EmbeddedPostgres) -> None:
        self.cluster = cluster

    async def __aenter__(self) -> Outage:
        await asyncio.to_thread(self.cluster.stop)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.cluster.start)


async def _answer(service: Service, token: str, method: str, path: str, **kw: Any) -> Any:
    """What one request gets, on a connection of its own (a dropped connection
    must not spoil the next request)."""
    async with service.client(token) as http:
        try:
            return _summary(await http.request(method, path, **kw))
        except httpx.TransportError as exc:
            return f"no answer: {type(exc).__name__}"


async def test_postgres_down_answers_503(cluster: EmbeddedPostgres, service: Service) -> None:
    async with service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    async with Outage(cluster):
        answers = {
            "list": await _answer(service, token, "GET", "/v1/instances"),
            "launch": await _answer(service, token, "POST", "/v1/instances", json={"name": "x"}),
            "tenants": await _answer(service, ADMIN_TOKEN, "GET", "/v1/tenants"),
            "seed-status": await _answer(service, token, "GET", "/status/u"),
        }
        healthz = await _answer(service, token, "GET", "/healthz")
        readyz = await _answer(service, token, "GET", "/readyz")
    assert healthz["status"] == 200, healthz
    assert readyz["status"] == 503, readyz
    assert readyz["body"]["checks"]["database"].startswith("error"), readyz
    for name, answer in answers.items():
        assert isinstance(answer, dict), (name, answers)
        assert answer["status"] == 503, (name, answers)
        assert answer["type"].startswith("application/problem+json"), (name, answers)
        assert answer["body"]["code"] == "unavailable", (name, answers)
    await wait_for(lambda: _ready(service), timeout=60, interval=0.2)


async def test_pooled_connections_are_renewed_after_a_quiet_restart(
    cluster: EmbeddedPostgres, service: Service
) -> None:
    """PostgreSQL restarts while nobody asks anything: the connections pooled before
    are dead, and no request may be handed one."""
    async with service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    async with service.client(token) as http:

        async def statuses(count: int) -> list[int]:
            listed = [http.get("/v1/instances") for _ in range(count)]
            return [r.status_code for r in await asyncio.gather(*listed)]

        assert set(await statuses(12)) == {200}  # several connections in the pool
        async with Outage(cluster):
            pass
        assert set(await statuses(12) + await statuses(12)) == {200}


async def test_reconnects_and_converges_without_restart(
    cluster: EmbeddedPostgres, service: Service, database_url: str
) -> None:
    async with service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    async with service.client(token) as http:
        first = (await http.post("/v1/instances", json={"name": "a"})).json()["instance"]["id"]
        await wait_phase(http, first, "running")
        pid = chroma_processes(service.data_dir)[first][0].pid

        async with Outage(cluster):
            during = []
            for _ in range(3):  # whatever the answer, nothing may hang or crash the service
                during.append((await http.post("/v1/instances", json={"name": "b"})).status_code)
                await asyncio.sleep(0.3)
        assert service.process is not None
        assert service.process.returncode is None

        await wait_for(lambda: _ready(service), timeout=60, interval=0.2)
        if 202 not in during:
            created = await http.post("/v1/instances", json={"name": "b"})
            assert created.status_code == 202, created.text
        second = (await http.post("/v1/instances", json={"name": "c"})).json()["instance"]["id"]
        assert (await http.post(f"/v1/instances/{first}/stop")).status_code == 202
        await wait_phase(http, second, "running", timeout=60)
        await wait_phase(http, first, "stopped", timeout=60)
        assert pid not in [p.pid for ps in chroma_processes(service.data_dir).values() for p in ps]

    rows = await wait_converged(database_url)
    assert {r.name: r.phase for r in rows.values()} == {
        "a": "stopped",
        "b": "running",
        "c": "running",
    }
    assert_local_invariants(rows, await allocated_ports(database_url), service.data_dir)
    assert service.process is not None
    assert service.process.returncode is None  # the same process throughout: never restarted

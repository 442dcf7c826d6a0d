"""Two service replicas (separate processes) on one PostgreSQL: a change made
through replica A reaches a socket held on replica B, in order, without gaps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import websockets

from chroma_orch.db.listener import asyncpg_dsn
from tests.conftest import ADMIN_TOKEN
from tests.e2e.service import Service, kill_chroma_processes
from tests.events.live import receive
from tests.helpers import create_tenant, wait_phase


@pytest.fixture
async def replicas(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Service, Service]]:
    # A runs the reconciler (real Chroma servers); B only serves the API and sockets.
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a = Service(database_url, tmp_path / "a" / "data")
    b = Service(database_url, tmp_path / "b" / "data", CHROMA_ORCH_RECONCILER__ENABLED="false")
    try:
        await a.start()
        await b.start()
        yield a, b
    finally:
        await a.stop()
        await b.stop()
        kill_chroma_processes(a.data_dir)


async def _seqs(database_url: str, after: int) -> list[int]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch("SELECT seq FROM events WHERE seq > $1 ORDER BY seq", after)
        return [row["seq"] for row in rows]
    finally:
        await conn.close()


async def test_change_on_a_reaches_socket_on_b(
    replicas: tuple[Service, Service], database_url: str
) -> None:
    a, b = replicas
    url = b.url.replace("http://", "ws://") + "/v1/events"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot"
        async with a.client() as admin:
            _, token = await create_tenant(admin, "acme")
        async with a.client(token) as http:
            created = await http.post("/v1/instances", json={"name": "main"})
            instance_id = created.json()["instance"]["id"]
            await wait_phase(http, instance_id, "running")
        events: list[dict[str, Any]] = []
        while not any(e["after"].get("phase") == "running" for e in events if e["after"]):
            message = await receive(ws, 20)
            if message["type"] == "event":
                events.append(message)
        mine = [e for e in events if e["instance_id"] == instance_id]
        assert mine[0]["event"] == "instance.created"
        phases = [e["after"]["phase"] for e in mine if e["event"] == "instance.phase_changed"]
        assert phases[-1] == "running"
        assert [e["seq"] for e in events] == (await _seqs(database_url, snapshot["seq"]))[
            : len(events)
        ]
        assert mine[-1]["after"]["endpoint"]["port"] > 0

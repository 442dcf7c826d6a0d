"""kill -9 the service while instances run and one starts; a new service converges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from chroma_orch.db.session import create_engine
from tests.e2e.service import Service, chroma_processes, kill_chroma_processes, port_is_open
from tests.helpers import create_tenant, wait_for, wait_phase


@pytest.fixture
async def data_dir(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "data"
    yield path
    kill_chroma_processes(path)


async def _allocated_ports(database_url: str) -> list[int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text("SELECT port FROM allocated_ports"))).scalars())
    finally:
        await engine.dispose()


async def test_kill_9_then_restart_converges_without_duplicates(
    database_url: str, data_dir: Path
) -> None:
    first = Service(database_url, data_dir)
    await first.start()
    try:
        async with first.client() as admin:
            _, token = await create_tenant(admin, "acme")
        async with first.client(token) as http:
            ids = []
            for name in ("a", "b", "c"):
                created = await http.post("/v1/instances", json={"name": name})
                ids.append(created.json()["instance"]["id"])
            for instance_id in ids:
                await wait_phase(http, instance_id, "running")
            created = await http.post("/v1/instances", json={"name": "d"})
            ids.append(created.json()["instance"]["id"])

            async def starting() -> bool:
                body = (await http.get(f"/v1/instances/{ids[3]}")).json()
                return bool(body["phase"] in ("starting", "running"))

            await wait_for(starting, timeout=30, interval=0.005)
    finally:
        await first.kill9()

    survivors = chroma_processes(data_dir)
    assert all(len(survivors.get(i, [])) == 1 for i in ids[:3])

    second = Service(
        database_url,
        data_dir,
        CHROMA_ORCH_LOCAL__PORT_RANGE=first.env["CHROMA_ORCH_LOCAL__PORT_RANGE"],
    )
    await second.start()
    try:
        async with second.client(token) as http:
            running = [await wait_phase(http, i, "running", timeout=45) for i in ids]
        processes = chroma_processes(data_dir)
        assert sorted(processes) == sorted(ids)
        assert all(len(procs) == 1 for procs in processes.values()), processes
        for survivor in ids[:3]:  # re-attached, not relaunched
            assert processes[survivor][0].pid == survivors[survivor][0].pid
        ports = sorted(body["endpoint"]["port"] for body in running)
        assert sorted(await _allocated_ports(database_url)) == ports
        assert all(port_is_open("127.0.0.1", port) for port in ports)
    finally:
        await second.stop()
    await asyncio.sleep(0)

"""Liveness after start on ECS: a task whose server stops answering (ECS still says
RUNNING) is stopped, after the address quarantine like any stop, and replaced with
reason ``Unresponsive``.

moto runs no container, so the test layer of ``test_ecs_address_reuse`` gives every
task one loopback address, where a stand-in Chroma answers the heartbeat until the
test makes it hang (it reads the request and answers nothing: a hung server).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from chroma_orch.db.models import Event
from chroma_orch.settings import EcsSettings, HeartbeatSettings, ProxySettings
from tests.e2e.service import free_port
from tests.ecs.conftest import EcsService, cluster_tasks
from tests.ecs.one_address import QUARANTINE, SHARED_IP, OneAddressEcs
from tests.helpers import bearer, create_tenant, wait_for, wait_phase


class StandIn:
    """A Chroma heartbeat at the shared address that can be made to hang."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.hung = False
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> StandIn:
        self._server = await asyncio.start_server(self._answer, SHARED_IP, self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.hung:
                await reader.read()  # never answers; the caller gives up
                return
            body = b'{"nanosecond heartbeat": 1}'
            head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def ecs_settings(ecs_settings: EcsSettings, port: int) -> EcsSettings:
    return ecs_settings.model_copy(update={"container_port": port, "check_heartbeat": True})


@pytest.fixture
def service_overrides() -> dict[str, Any]:
    return {
        "proxy": ProxySettings(address_quarantine=QUARANTINE),
        "heartbeat": HeartbeatSettings(interval=0.3, timeout=0.3, failures=3),
    }


async def test_a_hung_task_is_replaced_as_unresponsive(
    ecs_service: EcsService, port: int, moto_url: str
) -> None:
    OneAddressEcs().attach(ecs_service.runtime)
    http = ecs_service.http
    _, token = await create_tenant(http, "acme")
    async with StandIn(port) as chroma:
        created = await http.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
        instance_id = created.json()["instance"]["id"]
        await wait_phase(http, instance_id, "running", timeout=30)
        (first,) = await cluster_tasks(moto_url)
        chroma.hung = True

        async def stopping() -> dict[str, Any] | None:
            body: dict[str, Any] = (await http.get(f"/v1/instances/{instance_id}")).json()
            return body if body["phase"] == "stopping" else None

        await wait_for(stopping, timeout=30, interval=0.05)  # no door routes to it now
        chroma.hung = False  # the next task's server answers

        async def replaced() -> dict[str, Any] | None:
            body: dict[str, Any] = (await http.get(f"/v1/instances/{instance_id}")).json()
            return body if body["phase"] == "running" and body["restart_count"] == 1 else None

        await wait_for(replaced, timeout=QUARANTINE + 30, interval=0.1)
    (second,) = await cluster_tasks(moto_url)
    assert second["taskArn"] != first["taskArn"]
    assert ecs_service.calls.reached["StopTask"] == 1  # the hung task did not stay
    async with ecs_service.app.state.ctx.sessions() as session:
        events = (await session.scalars(select(Event).order_by(Event.seq))).all()
    crashed = [e.after or {} for e in events if e.type == "instance.crashed"]
    assert [c.get("reason") for c in crashed] == ["Unresponsive"]

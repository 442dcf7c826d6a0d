"""ECS gives a stopped task's private IP to whichever task it starts next, for any
tenant. Here it always does: a test layer over moto rewrites every task's ENI
address to one loopback address, and a stand-in server on it answers with the name
of the tenant whose task holds the address now, swapped the moment ECS is asked to
stop the old task (the worst case: the next task is up at once).

Tenant B keeps asking through Nginx and the built-in proxy while its instance stops
and tenant A's task takes the address, then the roles swap as B starts again. No
request of one tenant may ever be answered by the other's server.

Why the layer: moto hands out distinct IPs from the subnet and runs no container,
while AWS documents that a task's ENI and its private IP are released when the
task stops and may be reused ("Fargate task networking", Amazon ECS Developer
Guide: each task gets its own ENI with a primary private IP from the subnet;
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-task-networking.html).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn

from chroma_orch.settings import EcsSettings, ProxySettings
from tests.dataplane.nginx_proc import running_nginx
from tests.e2e.service import free_port
from tests.ecs.conftest import EcsService
from tests.ecs.one_address import QUARANTINE, SHARED_IP, OneAddressEcs
from tests.helpers import bearer, create_tenant, wait_for, wait_phase

PATH = "/api/v2/heartbeat"


@dataclass
class AddressHolder:
    """The server at the shared address: answers every request with its owner's name."""

    port: int
    owner: str = ""
    _server: asyncio.Server | None = None

    async def serve(self, owner: str) -> None:
        await self.close()
        self.owner = owner
        self._server = await asyncio.start_server(self._answer, SHARED_IP, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = json.dumps({"server": self.owner}).encode()
            head = (
                f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@dataclass
class Probe:
    urls: list[str]
    token: str
    answers: list[tuple[int, str]] = field(default_factory=list)

    async def loop(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=30, headers=bearer(self.token)) as http:
            while not stop.is_set():
                for url in self.urls:
                    answer = await http.get(url)
                    self.answers.append((answer.status_code, answer.text))
                await asyncio.sleep(0.02)


@pytest.fixture
def holder() -> AddressHolder:
    return AddressHolder(free_port())


@pytest.fixture
def ecs_settings(ecs_settings: EcsSettings, holder: AddressHolder) -> EcsSettings:
    return ecs_settings.model_copy(update={"container_port": holder.port})


@pytest.fixture
def service_overrides() -> dict[str, Any]:
    return {"proxy": ProxySettings(address_quarantine=QUARANTINE)}


@asynccontextmanager
async def serving(service: EcsService) -> AsyncIterator[int]:
    """The app (its lifespan already running) on a real port, for Nginx."""
    port = free_port()
    config = uvicorn.Config(service.app, host="127.0.0.1", port=port, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await wait_for(started, timeout=10)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _hand_over(
    service: EcsService, tenants: dict[str, Tenant], holder: AddressHolder,
    leaving: str, arriving: str,
) -> Probe:  # fmt: skip
    """``leaving`` stops while its token keeps asking; the moment ECS is asked to stop
    its task, ``arriving``'s server holds the address, and ``arriving`` starts."""
    http = service.http
    stop_asked = asyncio.Event()

    def on_stop_task(model: Any, **_: Any) -> None:
        if model.name == "StopTask":
            stop_asked.set()

    client = await service.runtime.api.client("ecs")
    client.meta.events.register("before-call.ecs", on_stop_task)
    gone, coming = tenants[leaving], tenants[arriving]
    probe = Probe(gone.urls, gone.token)
    stop = asyncio.Event()
    probing = asyncio.create_task(probe.loop(stop))
    try:
        assert (await http.post(f"/v1/instances/{gone.instance_id}/stop")).status_code == 202
        await asyncio.wait_for(stop_asked.wait(), QUARANTINE + 20)
        await holder.serve(arriving)  # AWS gave the IP to the next task, up at once
        await wait_phase(http, gone.instance_id, "stopped", timeout=30)
        await coming.run(http)
        await coming.served()
        await asyncio.sleep(6)  # and on, past Nginx's cache lifetime
    finally:
        stop.set()
        await probing
        client.meta.events.unregister("before-call.ecs", on_stop_task)
    return probe


@dataclass
class Tenant:
    name: str
    token: str
    bases: list[str]
    instance_id: str = ""

    @property
    def urls(self) -> list[str]:
        return [f"{base}/i/{self.instance_id}{PATH}" for base in self.bases]

    async def run(self, http: httpx.AsyncClient) -> None:
        """Launch its instance (or start it again) and wait until it runs."""
        if self.instance_id:
            answer = await http.post(f"/v1/instances/{self.instance_id}/start")
        else:
            answer = await http.post(
                "/v1/instances", json={"name": "main"}, headers=bearer(self.token)
            )
            self.instance_id = answer.json()["instance"]["id"]
        assert answer.status_code == 202, answer.text
        running = await wait_phase(http, self.instance_id, "running", timeout=30)
        assert running["endpoint"]["host"] == SHARED_IP

    async def served(self) -> None:
        """Both doors serve the tenant its own server."""
        async with httpx.AsyncClient(timeout=30, headers=bearer(self.token)) as http:
            for url in self.urls:
                answer = await http.get(url)
                assert answer.status_code == 200, answer.text
                assert answer.json() == {"server": self.name}


async def test_a_reused_task_ip_never_serves_the_tenant_that_left_it(
    ecs_service: EcsService, holder: AddressHolder
) -> None:
    OneAddressEcs().attach(ecs_service.runtime)
    http = ecs_service.http
    try:
        async with serving(ecs_service) as port, running_nginx(port) as nginx:
            bases = [f"http://127.0.0.1:{port}", nginx.url]
            tenants = {
                name: Tenant(name, (await create_tenant(http, name))[1], bases)
                for name in ("bravo", "alpha")
            }
            await holder.serve("bravo")
            await tenants["bravo"].run(http)
            await tenants["bravo"].served()  # both doors hold bravo's route now
            first = await _hand_over(ecs_service, tenants, holder, "bravo", "alpha")
            back = await _hand_over(ecs_service, tenants, holder, "alpha", "bravo")
    finally:
        await holder.close()
    assert [answer for answer in first.answers if "alpha" in answer[1]] == []
    assert {status for status, _ in first.answers} <= {200, 503}, first.answers
    assert any("bravo" in text for _, text in first.answers)  # served until it stopped
    assert [answer for answer in back.answers if "bravo" in answer[1]] == []
    assert {status for status, _ in back.answers} <= {200, 503}, back.answers

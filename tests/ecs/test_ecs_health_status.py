"""Liveness on ECS without a network path from the service to the tasks
(``check_heartbeat`` off, as on moto): the container health check's verdict, as
DescribeTasks reports it (``healthStatus``), stands in for the heartbeat, and an
UNHEALTHY task is replaced with reason ``Unresponsive``."""

from __future__ import annotations

from typing import Any

import pytest

from chroma_orch.settings import HeartbeatSettings, ProxySettings
from tests.ecs.conftest import EcsService, cluster_tasks
from tests.ecs.one_address import QUARANTINE
from tests.helpers import bearer, create_tenant, wait_for, wait_phase


@pytest.fixture
def service_overrides() -> dict[str, Any]:
    return {
        "proxy": ProxySettings(address_quarantine=QUARANTINE),
        "heartbeat": HeartbeatSettings(interval=0.3, timeout=0.3, failures=3),
    }


class UnhealthyEcs:
    """The test layer: ECS reports every task UNHEALTHY while ``unhealthy`` is set.

    moto runs no container, so no health check ever fails there; AWS sets a task's
    ``healthStatus`` to UNHEALTHY once an essential container's health check has
    failed ``retries`` times, and leaves a standalone task (not a service's) running
    ("HealthCheck", Amazon ECS API Reference:
    https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_HealthCheck.html)."""

    def __init__(self) -> None:
        self.unhealthy = False

    def attach(self, service: EcsService) -> None:
        def hook(name: str, client: Any) -> None:
            if name == "ecs":
                client.meta.events.register("after-call.ecs", self._rewrite)

        service.runtime.api.on_client(hook)

    def _rewrite(self, parsed: dict[str, Any], **_: Any) -> None:
        for task in parsed.get("tasks") or []:
            if task.get("lastStatus") == "RUNNING":
                task["healthStatus"] = "UNHEALTHY" if self.unhealthy else "HEALTHY"


async def test_without_a_network_path_an_unhealthy_task_is_replaced(
    ecs_service: EcsService, moto_url: str
) -> None:
    """check_heartbeat off (the service cannot reach the tasks, as on moto): the
    container health check's verdict, as DescribeTasks reports it, is the heartbeat."""
    assert not ecs_service.settings.check_heartbeat
    layer = UnhealthyEcs()
    layer.attach(ecs_service)
    http = ecs_service.http
    _, token = await create_tenant(http, "acme")
    created = await http.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    instance_id = created.json()["instance"]["id"]
    await wait_phase(http, instance_id, "running", timeout=30)
    (first,) = await cluster_tasks(moto_url)
    layer.unhealthy = True

    async def draining() -> bool:
        body = (await http.get(f"/v1/instances/{instance_id}")).json()
        return bool(body["phase"] == "stopping")

    await wait_for(draining, timeout=30, interval=0.05)
    layer.unhealthy = False

    async def replaced() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"/v1/instances/{instance_id}")).json()
        return body if body["phase"] == "running" and body["restart_count"] == 1 else None

    await wait_for(replaced, timeout=QUARANTINE + 30, interval=0.1)
    (second,) = await cluster_tasks(moto_url)
    assert second["taskArn"] != first["taskArn"]

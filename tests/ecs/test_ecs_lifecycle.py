"""The ecs runtime end to end through the API: moto's ECS, real PostgreSQL,
the reconciler running."""

from __future__ import annotations

import time
from typing import Any

from tests.ecs.conftest import CLUSTER, EcsService, aws_client, cluster_tasks, instance_of
from tests.helpers import bearer, create_tenant, wait_for, wait_phase


def _ip(task: dict[str, Any]) -> str:
    for attachment in task["attachments"]:
        if attachment["type"] == "ElasticNetworkInterface":
            details = {d["name"]: d["value"] for d in attachment["details"]}
            return str(details["privateIPv4Address"])
    raise AssertionError("no ENI")


async def _task_definitions(moto_url: str) -> list[str]:
    async with aws_client(moto_url, "ecs") as ecs:
        arns: list[str] = (await ecs.list_task_definitions())["taskDefinitionArns"]
        return arns


async def test_full_lifecycle_through_the_api(ecs_service: EcsService, moto_url: str) -> None:
    http = ecs_service.http
    tenant_id, token = await create_tenant(http, "acme")
    created = await http.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    assert created.status_code == 202, created.text
    instance_id = created.json()["instance"]["id"]

    running = await wait_phase(http, instance_id, "running")
    (task,) = await cluster_tasks(moto_url)
    assert running["runtime"] == "ecs"
    assert running["endpoint"] == {
        "host": _ip(task),
        "port": 8000,
        "url": f"http://{_ip(task)}:8000",
    }
    tags = {t["key"]: t["value"] for t in task["tags"]}
    assert tags["chroma-orch:instance"] == instance_id
    assert tags["chroma-orch:tenant"] == tenant_id
    assert task["startedBy"] == ecs_service.settings.service_name
    (override,) = task["overrides"]["containerOverrides"]
    assert override["command"][:3] == ["run", "--path", "/data"]
    first_arn = task["taskArn"]

    assert (await http.post(f"/v1/instances/{instance_id}/stop")).status_code == 202
    stopped = await wait_phase(http, instance_id, "stopped")
    assert stopped["endpoint"] is None
    assert await cluster_tasks(moto_url) == []

    assert (await http.post(f"/v1/instances/{instance_id}/start")).status_code == 202
    again = await wait_phase(http, instance_id, "running")
    (second,) = await cluster_tasks(moto_url)
    assert second["taskArn"] != first_arn
    assert again["endpoint"]["host"] == _ip(second)

    assert (await http.delete(f"/v1/instances/{instance_id}")).status_code == 202

    async def gone() -> bool:
        return (await http.get(f"/v1/instances/{instance_id}")).status_code == 404

    await wait_for(gone, timeout=30)
    assert await cluster_tasks(moto_url) == []
    assert len(await _task_definitions(moto_url)) == 1  # registered once, reused
    assert ecs_service.calls.reached["RegisterTaskDefinition"] == 1


async def test_seed_routes_with_the_ecs_runtime(ecs_service: EcsService, moto_url: str) -> None:
    http = ecs_service.http
    for user in ("alice", "bob"):
        assert (await http.post("/launch", json={"user_id": user})).status_code == 202

    async def seed_status(user: str, status: str) -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"/status/{user}")).json()
        return body if body.get("status") == status else None

    alice = await wait_for(lambda: seed_status("alice", "running"))
    await wait_for(lambda: seed_status("bob", "running"))
    by_instance = {instance_of(t): t for t in await cluster_tasks(moto_url)}
    assert set(by_instance) == {alice["id"], (await http.get("/status/bob")).json()["id"]}
    assert alice["endpoint"]["host"] == _ip(by_instance[alice["id"]])

    assert (await http.post("/stop/alice")).status_code == 202
    await wait_for(lambda: seed_status("alice", "stopped"))
    assert (await http.delete("/delete/bob")).status_code == 202

    async def bob_gone() -> bool:
        # bob's task outlives the address quarantine, as every routed task does
        tasks = await cluster_tasks(moto_url)
        return (await http.get("/status/bob")).status_code == 404 and len(tasks) == 0

    await wait_for(bob_gone)
    assert (await http.post("/launch", json={"user_id": "alice"})).status_code == 202
    await wait_for(lambda: seed_status("alice", "running"))
    (task,) = await cluster_tasks(moto_url)
    assert instance_of(task) == alice["id"]
    assert len(await _task_definitions(moto_url)) == 1
    async with aws_client(moto_url, "ecs") as ecs:
        stopped = (await ecs.list_tasks(cluster=CLUSTER, desiredStatus="STOPPED"))["taskArns"]
    assert len(stopped) == 2  # alice's first task and bob's


async def test_a_routed_task_stops_taking_traffic_before_its_address_is_freed(
    ecs_service: EcsService,
) -> None:
    """ECS may give a stopped task's private IP to the next task it starts, for any
    tenant. So a running instance is "stopping" (no door routes to it any more) for
    the whole address quarantine before its task is stopped: every authorisation
    cached while it was routed has expired by the time its IP can be reused."""
    http = ecs_service.http
    _, token = await create_tenant(http, "acme")
    created = await http.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    instance_id = created.json()["instance"]["id"]
    await wait_phase(http, instance_id, "running")
    quarantine = ecs_service.app.state.ctx.settings.proxy.address_quarantine

    assert (await http.post(f"/v1/instances/{instance_id}/stop")).status_code == 202

    async def is_stopping() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"/v1/instances/{instance_id}")).json()
        return body if body["phase"] == "stopping" else None

    stopping = await wait_for(is_stopping, timeout=10, interval=0.02)
    began = time.monotonic()
    assert stopping["endpoint"] is not None  # the task still has its address
    proxied = await http.get(f"/i/{instance_id}/api/v2/heartbeat", headers=bearer(token))
    assert proxied.status_code == 503, proxied.text  # but no door routes to it
    await wait_phase(http, instance_id, "stopped", timeout=quarantine + 20)
    stopped_after = time.monotonic() - began
    assert ecs_service.calls.reached["StopTask"] == 1
    assert stopped_after >= quarantine - 1.0, stopped_after  # 1 s: when "stopping" was seen


async def test_an_instance_started_while_it_drains_runs_again(ecs_service: EcsService) -> None:
    """A start that comes while a stop drains (the task still running, no door routing
    to it) finishes the stop, then starts a new task: it never sticks in 'stopping'."""
    http = ecs_service.http
    _, token = await create_tenant(http, "acme")
    created = await http.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    instance_id = created.json()["instance"]["id"]
    await wait_phase(http, instance_id, "running")
    assert (await http.post(f"/v1/instances/{instance_id}/stop")).status_code == 202

    async def is_stopping() -> bool:
        body: dict[str, Any] = (await http.get(f"/v1/instances/{instance_id}")).json()
        return bool(body["phase"] == "stopping")

    await wait_for(is_stopping, timeout=10, interval=0.02)
    assert (await http.post(f"/v1/instances/{instance_id}/start")).status_code == 202
    quarantine = ecs_service.app.state.ctx.settings.proxy.address_quarantine
    again = await wait_phase(http, instance_id, "running", timeout=quarantine + 20)
    assert again["failure"] is None
    assert ecs_service.calls.reached["StopTask"] == 1
    assert ecs_service.calls.reached["RunTask"] == 2

"""An ECS start's sub-phases (provisioning, pending, pulling, pulled, running) as
the AWS-behaviour layer holds the task in each (``tests/ecs/aws_lifecycle.py``):
each shows in the API while the task is there, with the task's own timestamps,
is an ``instance.start_phase`` event, and counts in the per-phase histogram."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from chroma_orch.db.models import Event
from chroma_orch.telemetry.metrics import REGISTRY
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.aws_lifecycle import TaskLifecycle
from tests.ecs.conftest import EcsService
from tests.helpers import bearer, create_tenant, wait_for, wait_phase

_STEPS = (
    ("PENDING", "pending"),
    ("PULLING", "pulling"),
    ("PULLED", "pulled"),
    ("RUNNING", "running"),
)


def _count(phase: str) -> float:
    value = REGISTRY.get_sample_value(
        "chroma_orch_start_phase_seconds_count", {"runtime": "ecs", "phase": phase}
    )
    return value or 0.0


async def _at_start_phase(service: EcsService, instance_id: str, phase: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = (await service.http.get(f"/v1/instances/{instance_id}")).json()
        return body if body.get("start_phase") == phase else None

    found: dict[str, Any] = await wait_for(probe)
    return found


async def test_each_sub_phase_shows_while_the_task_is_in_it(
    ecs_service: EcsService, aws: AwsBehaviour
) -> None:
    lifecycle = aws.lifecycle = TaskLifecycle()
    counts = {phase: _count(phase) for _, phase in _STEPS}
    _, token = await create_tenant(ecs_service.http, "acme")
    created = await ecs_service.http.post(
        "/v1/instances", json={"name": "main"}, headers=bearer(token)
    )
    instance_id = created.json()["instance"]["id"]

    held = await _at_start_phase(ecs_service, instance_id, "provisioning")
    assert held["phase"] == "starting"
    for stage, phase in _STEPS[:-1]:
        lifecycle.advance(stage)
        held = await _at_start_phase(ecs_service, instance_id, phase)
        assert held["phase"] == "starting"  # still starting, and the API says where
    lifecycle.advance("RUNNING")
    running = await wait_phase(ecs_service.http, instance_id, "running")

    phases = running["start_phases"]
    assert list(phases) == ["provisioning", "pending", "pulling", "pulled", "running"]
    assert running["start_phase"] == "running"
    for stage, phase in _STEPS:  # the task's own timestamps, not when they were seen
        at = datetime.fromisoformat(phases[phase]).timestamp()
        assert abs(at - lifecycle.reached_at[stage]) < 0.001
    times = [datetime.fromisoformat(phases[p]) for p in phases]
    assert times == sorted(times)

    async with ecs_service.app.state.ctx.sessions() as session:
        rows = await session.scalars(
            select(Event).where(Event.type == "instance.start_phase").order_by(Event.seq)
        )
        events = [e.after for e in rows if str(e.instance_id) == instance_id]
    assert [e["start_phase"] for e in events] == list(phases)
    assert [datetime.fromisoformat(e["at"]) for e in events] == times
    assert all(e["seconds"] >= 0 for e in events)
    for _, phase in _STEPS:
        assert _count(phase) == counts[phase] + 1


async def test_a_task_running_at_once_skips_the_phases_it_never_showed(
    ecs_service: EcsService,
) -> None:
    """moto's default: the task is RUNNING from the first look, with no pull times;
    nothing is made up for the pull."""
    _, token = await create_tenant(ecs_service.http, "acme")
    created = await ecs_service.http.post(
        "/v1/instances", json={"name": "main"}, headers=bearer(token)
    )
    running = await wait_phase(ecs_service.http, created.json()["instance"]["id"], "running")
    assert "pulling" not in running["start_phases"]
    assert running["start_phase"] == "running"

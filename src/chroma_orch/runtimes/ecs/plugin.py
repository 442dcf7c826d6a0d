"""The ``ecs`` runtime's entry point (``chroma_orch.runtimes``: ``ecs``)."""

from __future__ import annotations

from chroma_orch.runtimes.base import Runtime, RuntimeServices
from chroma_orch.settings import Settings


def build(settings: Settings, services: RuntimeServices) -> Runtime:
    """ECS tasks get their own addresses (no ports); the AWS API budgets are shared
    by every replica through ``services.rate_limits`` when given; with an events queue,
    task states are shared through ``services.task_states`` and the queue is consumed
    by a loop registered through ``services.background``."""
    from chroma_orch.runtimes.ecs.runtime import EcsRuntime  # aioboto3: imported on use

    runtime = EcsRuntime(
        settings.ecs, rate_limits=services.rate_limits, task_states=services.task_states
    )
    if runtime.events is not None and services.background is not None:
        runtime_events = runtime.events
        services.background("ecs-events", runtime_events.run)
    return runtime

"""The ``ecs`` runtime's entry point (``chroma_orch.runtimes``: ``ecs``)."""

from __future__ import annotations

from chroma_orch.runtimes.base import Runtime, RuntimeServices
from chroma_orch.settings import Settings


def build(settings: Settings, services: RuntimeServices) -> Runtime:
    """ECS tasks get their own addresses (no ports); the AWS API budgets are shared
    by every replica through ``services.rate_limits`` when given."""
    from chroma_orch.runtimes.ecs.runtime import EcsRuntime  # aioboto3: imported on use

    return EcsRuntime(settings.ecs, rate_limits=services.rate_limits)

"""The ``sim`` runtime's entry point (``chroma_orch.runtimes``: ``sim``)."""

from __future__ import annotations

from chroma_orch.runtimes.base import Runtime, RuntimeServices
from chroma_orch.settings import Settings


def build(settings: Settings, services: RuntimeServices) -> Runtime:
    """The simulated API budgets are shared by every replica through
    ``services.rate_limits`` when given (as ECS's are); the servers' ports come from
    the simulated cloud's own range, not the database's port pool."""
    from chroma_orch.runtimes.sim.runtime import SimRuntime

    return SimRuntime(settings.sim, rate_limits=services.rate_limits)

"""Builds the configured runtime driver."""

from __future__ import annotations

from chroma_orch.runtimes.base import Runtime
from chroma_orch.runtimes.local.ports import PortReservations
from chroma_orch.settings import Settings


def build_runtime(settings: Settings, ports: PortReservations | None = None) -> Runtime:
    """The configured runtime; the local one reserves its servers' ports with ``ports``."""
    if settings.runtime == "ecs":
        from chroma_orch.runtimes.ecs.runtime import EcsRuntime

        return EcsRuntime(settings.ecs)
    from chroma_orch.runtimes.local.runtime import LocalRuntime

    return LocalRuntime(settings.local, settings.data_dir, ports)

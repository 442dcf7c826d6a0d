"""The ``local`` runtime's entry point (``chroma_orch.runtimes``: ``local``)."""

from __future__ import annotations

from chroma_orch.runtimes.base import Runtime, RuntimeServices
from chroma_orch.settings import Settings


def build(settings: Settings, services: RuntimeServices) -> Runtime:
    from chroma_orch.runtimes.local.runtime import LocalRuntime  # psutil, subprocesses

    return LocalRuntime(settings.local, settings.data_dir, services.ports)

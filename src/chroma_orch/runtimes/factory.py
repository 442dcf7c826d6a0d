"""Builds the configured runtime driver, found by name in the entry points."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from chroma_orch.runtimes import registry
from chroma_orch.runtimes.base import Runtime, RuntimeServices
from chroma_orch.settings import Settings

RuntimeBuilder = Callable[[Settings, RuntimeServices], Runtime]
"""What a ``chroma_orch.runtimes`` entry point names."""


def build_runtime(settings: Settings, services: RuntimeServices | None = None) -> Runtime:
    """The configured runtime, given what the control plane offers runtimes
    (``services``: the local one reserves its servers' ports there)."""
    build = registry.load(settings.runtime)
    if not callable(build):
        raise registry.RegistryError(
            f"the entry point of runtime {settings.runtime!r} names {build!r}, not a function "
            "build(settings, services) -> Runtime"
        )
    return cast(RuntimeBuilder, build)(settings, services or RuntimeServices())

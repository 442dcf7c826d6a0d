"""Builds the configured runtime driver, found by name in the entry points."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from chroma_orch.runtimes import registry
from chroma_orch.runtimes.base import Runtime
from chroma_orch.settings import Settings

RuntimeBuilder = Callable[[Settings], Runtime]
"""What a ``chroma_orch.runtimes`` entry point names."""


def build_runtime(settings: Settings) -> Runtime:
    build = registry.load(settings.runtime)
    if not callable(build):
        raise registry.RegistryError(
            f"the entry point of runtime {settings.runtime!r} names {build!r}, not a function "
            "build(settings) -> Runtime"
        )
    return cast(RuntimeBuilder, build)(settings)

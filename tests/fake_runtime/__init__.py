"""A third runtime, written as a plugin would be: this package plus one entry point
``fake = "tests.fake_runtime:build"`` in the ``chroma_orch.runtimes`` group, with no
edit anywhere else (the proof that runtimes are pluggable, issue 13).

Its servers live in this process (no Chroma): a named ``World`` holds them, so a new
runtime object on the same world finds them again as a restarted service would.
"""

from __future__ import annotations

from chroma_orch.runtimes.base import Runtime, RuntimeServices
from chroma_orch.settings import Settings
from tests.fake_runtime.runtime import FakeRuntime
from tests.fake_runtime.settings import FakeRuntimeSettings
from tests.fake_runtime.world import World, world

__all__ = ["FakeRuntime", "FakeRuntimeSettings", "World", "build", "world"]


def build(settings: Settings, services: RuntimeServices) -> Runtime:
    """The entry point: its own settings group, read from ``CHROMA_ORCH_FAKE__*``."""
    return FakeRuntime(FakeRuntimeSettings())

"""The fake runtime's own settings group: ``CHROMA_ORCH_FAKE__<FIELD>``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from chroma_orch.runtimes import registry


class FakeRuntimeSettings(BaseSettings):
    """The ``fake`` runtime: in-process servers for tests."""

    model_config = registry.settings_config("fake")

    world: str = Field(
        "default",
        description="Name of the world the servers live in; runtime objects on one world "
        "see the same servers (as a restarted service sees the last one's).",
    )
    start_timeout: float = Field(5.0, gt=0, description="Seconds a server may take to start.")
    ready_after: float = Field(
        0.0, ge=0, description="Seconds from start until a server answers (STARTING before)."
    )
    first_port: int = Field(
        40000, ge=1024, le=65000, description="Port of the first server when none is given."
    )

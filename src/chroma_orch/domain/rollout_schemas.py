"""API schemas of rollouts: fleet upgrades and rolling restarts in waves."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from chroma_orch.domain.schemas import _Input

MAX_WAVES = 20


class RolloutKind(enum.StrEnum):
    UPGRADE = "upgrade"
    RESTART = "restart"


class RolloutState(enum.StrEnum):
    """pending (created, not stepped yet), running, paused (by an admin), halted (a
    wave spent its error budget), succeeded, cancelled."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"


ACTIVE_ROLLOUT = (RolloutState.PENDING, RolloutState.RUNNING)
"""States the rollout loop steps."""


class MemberState(enum.StrEnum):
    WAITING = "waiting"
    ACTIVE = "active"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    SKIPPED = "skipped"


FAILED_MEMBER = (MemberState.FAILED, MemberState.ROLLED_BACK)
"""Member outcomes that count against a wave's error budget."""


class RolloutSelector(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_ids: list[uuid.UUID] | None = Field(
        None, description="Only these tenants' instances (null: every tenant)."
    )
    chroma_versions: list[str] | None = Field(
        None,
        description="Only instances whose spec names one of these Chroma versions "
        "(null: any version).",
    )
    labels: dict[str, str] | None = Field(
        None, description="Only instances carrying every one of these labels (key: value)."
    )


Percent = Annotated[StrictInt, Field(ge=1, le=100)]


class RolloutPlan(_Input):
    selector: RolloutSelector = Field(
        default_factory=RolloutSelector,
        description="Which live instances take part; chosen when the rollout is created.",
    )
    waves: list[Percent] = Field(
        default_factory=lambda: [100],
        min_length=1,
        max_length=MAX_WAVES,
        description="Cumulative percentages of the selection, strictly increasing, the last "
        "100: e.g. [1, 10, 100] = 1 %, then up to 10 %, then the rest. Wave k ends at "
        "ceil(p_k % of the selection), so a small selection may leave a wave empty.",
    )
    pause_seconds: int = Field(
        0, ge=0, le=7 * 86400, description="Seconds to wait after a wave before the next one."
    )
    error_budget: int = Field(
        0,
        ge=0,
        description="Members of one wave that may fail (or roll back) without halting the "
        "rollout: it halts when a wave has more than this many.",
    )
    max_concurrent: int = Field(
        1, ge=1, le=1000, description="Members restarting or upgrading at once."
    )

    @field_validator("waves")
    @classmethod
    def _cumulative(cls, waves: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(waves, waves[1:], strict=False)):
            raise ValueError("wave percentages must be strictly increasing")
        if waves[-1] != 100:
            raise ValueError("the last wave must be 100 (the whole selection)")
        return waves


class UpgradeRolloutCreate(RolloutPlan):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "chroma_version": "1.5.9",
                    "selector": {"labels": {"tier": "free"}},
                    "waves": [1, 10, 100],
                    "pause_seconds": 300,
                    "error_budget": 0,
                    "max_concurrent": 5,
                }
            ]
        },
    )

    chroma_version: str = Field(
        min_length=1, max_length=64, description="The Chroma version to upgrade to."
    )


class RestartRolloutCreate(RolloutPlan):
    """A rolling restart (e.g. after an image rebuild): the same waves, restarts only."""


class WaveRead(BaseModel):
    wave: int = Field(description="0 is the first wave.")
    percent: int = Field(description="The cumulative share of the selection it reaches.")
    members: int
    counts: dict[str, int] = Field(description="Members by state (waiting, active, ...).")


class RolloutRead(BaseModel):
    id: uuid.UUID
    kind: RolloutKind
    state: RolloutState
    request: dict[str, Any] = Field(description="What was asked (selector, waves, ...).")
    current_wave: int
    next_step_at: datetime | None
    message: str | None = Field(description="Why it halted or was cancelled.")
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    members: int = Field(description="Instances taking part.")
    waves: list[WaveRead]


class RolloutMemberRead(BaseModel):
    instance_id: uuid.UUID
    wave: int
    state: MemberState
    upgrade_id: uuid.UUID | None
    target_generation: int | None
    message: str | None
    started_at: datetime | None
    completed_at: datetime | None

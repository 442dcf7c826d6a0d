"""API schemas: ``XCreate`` for input (strict: unknown fields are refused),
``XRead`` for output. Never mixed with ORM classes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from chroma_orch.db.models import IntentStatus, SnapshotKind, SnapshotPhase
from chroma_orch.domain.plans import PlanName
from chroma_orch.domain.states import Action, DesiredState, Phase
from chroma_orch.runtimes.base import Architecture, StartPhase

_LABEL_NAME = r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
_LABEL_PREFIX = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
_LABEL_KEY = rf"^({_LABEL_PREFIX}/)?{_LABEL_NAME}$"
LabelKey = Annotated[str, StringConstraints(max_length=317, pattern=_LABEL_KEY)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=rf"^({_LABEL_NAME})?$")]
MAX_LABELS = 64
Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(
        max_length=MAX_LABELS,
        description="Key/value labels (rollout selectors match them), Kubernetes' rules: a "
        "key is a name of at most 63 letters, digits, '-', '_' or '.', from and to a letter "
        "or digit, optionally after a DNS prefix and '/'; a value is such a name or empty. "
        f"At most {MAX_LABELS}.",
        examples=[{"tier": "gold", "example.com/team": "search"}],
        json_schema_extra={  # every key matches: no other properties
            "additionalProperties": False,
            "propertyNames": {"maxLength": 317, "pattern": _LABEL_KEY},
        },
    ),
]

InstanceName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"),
    Field(
        description="Lower-case letters, digits and '-', 1-63 characters (a DNS label).",
        examples=["default"],
    ),
]
TenantName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"),
    Field(
        description="Letters, digits and . _ @ -, from a letter or digit, 1-63 characters.",
        examples=["acme"],
    ),
]


IdleTimeout = Annotated[
    int | None,
    Field(
        ge=0,
        le=30 * 24 * 3600,
        description="Seconds without proxied traffic before the instance is stopped "
        "(0 = never; null = inherit: instance from tenant, tenant from the service).",
    ),
]


def _takes_int(annotation: object) -> bool:
    return annotation is int or int in get_args(annotation)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @field_validator("*", mode="before")
    @classmethod
    def _json_integers_only(cls, value: object, info: ValidationInfo) -> object:
        """916 and 916.0 are JSON integers; true and "916" are not (no lax coercion)."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _takes_int(field.annotation) and isinstance(value, bool | str):
            raise ValueError("must be an integer")
        return value


class _Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TenantCreate(_Input):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "acme"}]})

    name: TenantName
    idle_timeout_seconds: IdleTimeout = None


class TenantUpdate(_Input):
    idle_timeout_seconds: IdleTimeout = None
    plan: PlanName | None = Field(
        None,
        description="The tenant's plan (PUT /v1/plans/{name}); null: the service's default "
        "plan. Checked at the next launch or spec change; running instances keep their spec.",
    )


class TenantRead(_Output):
    id: uuid.UUID
    name: str
    idle_timeout_seconds: int | None
    plan: str | None = Field(None, description="The tenant's plan; null: the default plan.")
    created_at: datetime


class TokenCreate(_Input):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "ci", "expires_in_seconds": 86400}]}
    )

    name: Annotated[str, StringConstraints(min_length=1, max_length=63)] = "default"
    expires_in_seconds: int | None = Field(
        None, ge=60, le=10 * 365 * 24 * 3600, description="Lifetime; unset: never expires."
    )


class TokenRead(_Output):
    id: uuid.UUID
    name: str
    tenant_id: uuid.UUID | None
    prefix: str = Field(description="First characters of the token, to recognise it.")
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    token: str = Field(description="The secret. Shown only in this response; store it now.")


class SpecRequest(_Input):
    """The fields of a server spec a request asks for; those left out come from the
    instance's current spec (a change) or the tenant's plan defaults (a launch), then
    the runtime's defaults."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"memory_mib": 2048, "chroma_version": "1.5.9"}]},
    )

    cpu: int | None = Field(None, ge=1, le=1_000_000, description="CPU units (1024 = 1 vCPU).")
    memory_mib: int | None = Field(
        None, ge=1, le=10_000_000, description="Memory in MiB (local: the enforced limit)."
    )
    architecture: Architecture | None = Field(None, description="CPU architecture (ECS).")
    chroma_version: str | None = Field(
        None, min_length=1, max_length=64, description="The Chroma server version."
    )
    settings: dict[str, Any] | None = Field(
        None,
        description="Chroma server settings (the whitelist: allow_reset, "
        "max_payload_size_bytes, cors_allow_origins); a change merges them key by key, "
        "null removing one.",
    )

    def requested(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class SpecRead(BaseModel):
    """An instance's resolved spec (null fields: the runtime's defaults, for instances
    launched before specs existed or on a runtime with one spec)."""

    cpu: int | None = Field(None, description="CPU units (1024 = 1 vCPU).")
    memory_mib: int | None = Field(None, description="Memory in MiB.")
    architecture: Architecture | None = Field(None, description="CPU architecture.")
    chroma_version: str | None = Field(None, description="The Chroma server version.")
    settings: dict[str, Any] = Field(default_factory=dict, description="Chroma server settings.")


class InstanceCreate(_Input):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "main"}]})

    name: InstanceName = "default"
    tenant_id: uuid.UUID | None = Field(
        None,
        description="Tenant that owns the instance: required for admin tokens, "
        "implied (and optional) for tenant tokens.",
    )
    idle_timeout_seconds: IdleTimeout = None
    wake_on_request: StrictBool = Field(
        False,
        description="A proxied request to the instance after it was culled starts it again "
        "and is held until it runs.",
    )
    from_snapshot: uuid.UUID | None = Field(
        None,
        description="Start from a copy of this ready snapshot's data (a clone): one of the "
        "tenant's own, or any for an admin token.",
    )
    spec: SpecRequest | None = Field(
        None, description="Size, Chroma version and server settings (unset: the plan's defaults)."
    )
    labels: Labels = Field(default_factory=dict)


class InstanceImport(BaseModel):
    """The query of ``POST /v1/instances/import`` (its body is the archive)."""

    model_config = ConfigDict(extra="forbid")

    name: InstanceName
    tenant_id: uuid.UUID | None = Field(
        None, description="Tenant that owns the instance: required for admin tokens."
    )
    idle_timeout_seconds: IdleTimeout = None
    wake_on_request: bool = Field(
        False, description="Start the instance again on a proxied request once culled."
    )

    def to_create(self) -> InstanceCreate:
        return InstanceCreate.model_validate(self.model_dump())


class InstanceUpdate(_Input):
    idle_timeout_seconds: IdleTimeout = None
    wake_on_request: StrictBool | None = None
    spec: SpecRequest | None = Field(
        None,
        description="Spec fields to change, merged onto the current spec. A change of the "
        "resolved spec is a new generation: a running instance restarts on it (data kept), "
        "a stopped one gets it at its next start. 409 upgrade_in_progress during an upgrade.",
    )
    labels: Labels | None = Field(None, description="The instance's labels (replaced whole).")


class EndpointRead(BaseModel):
    host: str
    port: int
    url: str = Field(description="Where the Chroma server really listens (internal).")


class FailureRead(BaseModel):
    reason: str = Field(description="Machine-readable cause, e.g. StartTimeout, ProcessExited.")
    message: str


class InstanceRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "7f0c2a7e-5a1d-4a49-9a3e-2f1f0c7a9b10",
                    "name": "main",
                    "tenant_id": "0b7e6f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
                    "runtime": "local",
                    "desired_state": "running",
                    "phase": "running",
                    "generation": 3,
                    "observed_generation": 3,
                    "endpoint": {
                        "host": "127.0.0.1",
                        "port": 30412,
                        "url": "http://127.0.0.1:30412",
                    },
                    "url": "http://127.0.0.1:8080/i/7f0c2a7e-5a1d-4a49-9a3e-2f1f0c7a9b10",
                    "failure": None,
                    "restart_count": 0,
                    "created_at": "2026-11-26T09:00:00Z",
                    "updated_at": "2026-11-26T09:00:01Z",
                    "phase_changed_at": "2026-11-26T09:00:01Z",
                }
            ]
        }
    )

    id: uuid.UUID
    name: str
    tenant_id: uuid.UUID
    runtime: str
    desired_state: DesiredState
    phase: Phase
    generation: int
    observed_generation: int = Field(
        description="Generation the reconciler last acted on; phase is current only when equal."
    )
    endpoint: EndpointRead | None
    url: str | None = Field(
        None, description="URL for the tenant's Chroma client, through the data plane."
    )
    failure: FailureRead | None
    restart_count: int
    idle_timeout_seconds: int | None = None
    wake_on_request: bool = False
    last_activity_at: datetime | None = Field(
        None, description="Last proxied request (recorded in batches, seconds late)."
    )
    culled_at: datetime | None = Field(
        None, description="When the idle culler stopped the instance, if it did."
    )
    created_at: datetime
    updated_at: datetime
    phase_changed_at: datetime
    start_phase: StartPhase | None = Field(
        None,
        description="How far the latest start got (while `phase` is `starting`, where it "
        "is now): provisioning, pending, pulling, pulled, running, listening, "
        "heartbeat_answered. Each runtime reports the phases it can see.",
    )
    start_phases: dict[StartPhase, datetime] = Field(
        default_factory=dict,
        description="When the latest start reached each of its phases; a new start "
        "attempt begins empty.",
    )
    spec: SpecRead = Field(
        default_factory=SpecRead,
        description="The resolved spec: what the server of this generation runs on.",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="The instance's labels.")
    upgrade_id: uuid.UUID | None = Field(
        None,
        description="Its guarded upgrade under way (GET /v1/instances/{id}/upgrades/"
        "{upgrade_id}), else null.",
    )


class IntentRead(_Output):
    id: uuid.UUID
    instance_id: uuid.UUID
    action: Action
    status: IntentStatus = Field(
        description="Open while pending or in_progress; then succeeded, failed, or "
        "superseded by a later request."
    )
    target_generation: int
    attempts: int
    error: str | None
    created_at: datetime
    completed_at: datetime | None


class InstanceAccepted(BaseModel):
    instance: InstanceRead
    intent: IntentRead


class InstancePage(BaseModel):
    items: list[InstanceRead]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; null on the last page."
    )
    seq: int | None = Field(
        None,
        description="The event log's newest `seq` when the page was read: every change up "
        "to it shows in the page, so `/v1/events?since=seq` brings every later one.",
    )


class InstanceLogs(BaseModel):
    instance_id: uuid.UUID
    lines: list[str]


class LaunchRequest(_Input):
    model_config = ConfigDict(json_schema_extra={"examples": [{"user_id": "alice"}]})

    user_id: TenantName


class SeedInstance(InstanceRead):
    """The seed API's view: the instance plus the user and a one-word status."""

    user_id: str
    status: str = Field(description="The instance's phase.")
    port: int | None = None


def seed_view(instance: InstanceRead, user_id: str) -> dict[str, Any]:
    return {
        **instance.model_dump(),
        "user_id": user_id,
        "status": instance.phase.value,
        "port": instance.endpoint.port if instance.endpoint else None,
    }


class SnapshotCreate(_Input):
    """A snapshot request (nothing to choose yet: the body may be empty)."""


class SnapshotRead(_Output):
    id: uuid.UUID = Field(description="The snapshot's id.")
    instance_id: uuid.UUID = Field(description="The instance whose data it holds.")
    tenant_id: uuid.UUID = Field(description="The tenant that owns it.")
    kind: SnapshotKind = Field(
        description="Why it was taken: manual, scheduled, pre_delete (an undelete restores "
        "it), pre_upgrade, pre_restore (restoring it undoes a restore), import."
    )
    phase: SnapshotPhase = Field(
        description="pending, then running, then ready or failed; deleting while a DELETE "
        "removes it."
    )
    failure: FailureRead | None = Field(
        None, description="Why it failed (phase failed), e.g. StoreUnavailable."
    )
    size_bytes: int | None = Field(None, description="Size of the archive as stored.")
    checksum: str | None = Field(None, description="SHA-256 (hex) of the archive as stored.")
    chroma_version: str | None = Field(None, description="Chroma version that wrote the data.")
    store: str = Field(description="Where it is kept: local, s3 (an archive) or ebs.")
    created_at: datetime = Field(description="When it was requested.")
    started_at: datetime | None = Field(None, description="When it was last begun.")
    completed_at: datetime | None = Field(None, description="When it became ready or failed.")


class SnapshotPage(BaseModel):
    items: list[SnapshotRead] = Field(description="Every snapshot of the instance, newest first.")


class RestoreRequest(_Input):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"snapshot_id": "0b6f9c1e-8a4e-4a57-9f4e-3f1c2a7d9b10"}]}
    )

    snapshot_id: uuid.UUID = Field(description="The ready snapshot whose data to restore.")


MAX_SCHEDULE_SECONDS = 366 * 86400


class SnapshotScheduleWrite(_Input):
    model_config = ConfigDict(json_schema_extra={"examples": [{"every": 86400, "keep": 7}]})

    every: int = Field(
        ge=60,
        le=MAX_SCHEDULE_SECONDS,
        description="Seconds between scheduled snapshots (e.g. 86400: daily).",
    )
    keep: int = Field(
        ge=1, le=1000, description="Ready scheduled snapshots kept; older ones are deleted."
    )


class SnapshotScheduleRead(BaseModel):
    tenant_id: uuid.UUID = Field(description="The tenant the schedule belongs to.")
    instance_id: uuid.UUID | None = Field(
        description="The instance whose own schedule this is; null: the tenant's schedule, "
        "which applies to every instance of the tenant without a schedule of its own."
    )
    every: int = Field(description="Seconds between scheduled snapshots.")
    keep: int = Field(description="Ready scheduled snapshots kept.")
    next_snapshot_at: datetime | None = Field(
        None,
        description="For an instance: when its next scheduled snapshot is due (null until "
        "the scheduler has covered it: at its next pass).",
    )
    created_at: datetime = Field(description="When the schedule was first set.")
    updated_at: datetime = Field(description="When the schedule was last changed.")

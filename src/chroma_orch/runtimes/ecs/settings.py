"""Settings of the ``ecs`` runtime (``CHROMA_ORCH_ECS__*``), next to its code.

Only pydantic here: ``chroma_orch.settings`` nests this group as ``Settings.ecs``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

ECS_API_LIMITS: dict[str, tuple[int, float]] = {
    # category: (burst, refill per second), AWS's published per-account, per-region
    # defaults (docs/ecs.md "Rate limits" cites each):
    # "AWS Fargate throttling quotas" (developerguide/throttling.html): RunTask on
    # Fargate 20 calls/s, burst and sustained; tasks launched 100 burst, 20/s.
    "run": (20, 20.0),  # RunTask calls
    "launch": (100, 20.0),  # tasks launched (a RunTask of `count` tasks takes `count`)
    # "Request throttling for the Amazon ECS API" (APIReference/request-throttling.html)
    "stop": (100, 40.0),  # StopTask (task modification actions)
    "describe": (100, 20.0),  # DescribeTasks, ListTasks, DescribeTaskDefinition
    "register": (20, 1.0),  # RegisterTaskDefinition
    # "CloudWatch Logs quotas": GetLogEvents 25 TPS per account and region
    "logs": (25, 25.0),
}


class EcsSettings(BaseModel):
    """The ``ecs`` runtime: Chroma servers as AWS ECS Fargate tasks.

    Credentials come from the standard AWS chain (environment, profile, task/instance role).
    """

    region: str = Field("us-east-1", description="AWS region of the cluster.")
    cluster: str = Field("chroma-orch", description="ECS cluster name or ARN.")
    endpoint_url: str | None = Field(
        None,
        description="ECS-compatible endpoint (e.g. moto), also used for CloudWatch Logs; "
        "unset: AWS's own.",
    )
    subnets: list[str] = Field(
        default_factory=list, description="Subnet ids the tasks' network interfaces go in."
    )
    security_groups: list[str] = Field(
        default_factory=list,
        description="Security group ids of the tasks; must let this service reach the "
        "container port.",
    )
    assign_public_ip: bool = Field(
        False, description="Give tasks a public IP (only for subnets without a NAT route)."
    )
    image: str = Field("chromadb/chroma:1.5.9", description="Chroma 1.x server image (pin a tag).")
    cpu: int = Field(1024, ge=256, description="Task CPU units (1024 = 1 vCPU).")
    memory: int = Field(2048, ge=512, description="Task memory (MiB).")
    container_port: int = Field(8000, ge=1, le=65535, description="Port Chroma listens on.")
    container_name: str = Field("chroma", description="Name of the Chroma container.")
    execution_role_arn: str | None = Field(
        None, description="Task execution role (pulls the image, writes CloudWatch Logs)."
    )
    task_role_arn: str | None = Field(
        None, description="Task role (the server's own AWS identity; EFS IAM authorization)."
    )
    family_prefix: str = Field(
        "chroma-orch",
        description="Task definition family prefix; the family is PREFIX-<hash of the spec>, "
        "registered once per distinct spec and reused.",
    )
    service_name: str = Field(
        "chroma-orch",
        max_length=36,
        pattern=r"^[A-Za-z0-9_/-]+$",
        description="startedBy of every task this service launches (ownership: discovery, "
        "adoption, orphan collection). Several deployments sharing a cluster need "
        "distinct names.",
    )
    log_group: str = Field(
        "/chroma-orch/instances",
        description="CloudWatch Logs group of the awslogs driver (must exist).",
    )
    log_stream_prefix: str = Field(
        "chroma",
        description="awslogs stream prefix; a task's stream is PREFIX/CONTAINER/TASK_ID.",
    )
    efs_file_system_id: str | None = Field(
        None,
        description="EFS file system for persistent data; unset: data lives and dies with "
        "the task.",
    )
    efs_access_point_id: str | None = Field(
        None, description="EFS access point (its root becomes the data mount)."
    )
    data_mount: str = Field(
        "/data",
        description="Where the EFS volume is mounted; each instance's data is DATA_MOUNT/<id>.",
    )
    cleanup_image: str = Field(
        "public.ecr.aws/docker/library/busybox:stable",
        description="Image of the one-shot task that removes a deleted instance's EFS directory.",
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Extra tags put on every task and task definition."
    )
    check_heartbeat: bool = Field(
        True,
        description="Believe RUNNING only once the task's Chroma heartbeat answers (needs a "
        "network path from this service to the tasks).",
    )
    heartbeat_timeout: float = Field(2.0, gt=0, description="Seconds per heartbeat probe.")
    container_health_check: bool = Field(
        True,
        description="Give the Chroma container an ECS healthCheck (bash's /dev/tcp asks "
        "Chroma's heartbeat: the image has no curl). ECS does not stop an unhealthy "
        "standalone task; without check_heartbeat, a task ECS reports UNHEALTHY counts "
        'as a missed heartbeat (docs/ecs.md "Liveness").',
    )
    start_timeout: float = Field(
        600.0, gt=0, description="Seconds a task may take from RunTask to running."
    )
    wake_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds a proxied request to a culled wake-on-request instance is held "
        "while its task starts: a Fargate cold start (image pull, ENI) takes 30-90 s "
        "(culling.wake_timeout overrides it).",
    )
    visibility_grace: float = Field(
        60.0,
        ge=0,
        description="Seconds after RunTask during which a task DescribeTasks does not know "
        "yet (reason MISSING: the ECS API is eventually consistent) counts as starting, "
        "not as gone.",
    )
    api_limits: dict[str, tuple[int, float]] = Field(
        default_factory=lambda: dict(ECS_API_LIMITS),
        description="Token buckets per API category: [burst, refill per second]; run "
        "(RunTask calls), launch (tasks launched), stop (StopTask), describe (DescribeTasks, "
        "ListTasks, DescribeTaskDefinition), register (RegisterTaskDefinition), logs "
        "(GetLogEvents). Shared by every replica through the database (AWS counts per "
        "account and region). Defaults: AWS's published Fargate/ECS rates (docs/ecs.md); "
        "unnamed categories keep them.",
    )
    retry_attempts: int = Field(
        8, ge=1, description="Attempts per call on ThrottlingException or a 5xx."
    )
    retry_base: float = Field(0.2, gt=0, description="First retry delay (s), doubled per try.")
    retry_max: float = Field(20.0, gt=0, description="Longest retry delay (s); full jitter.")
    batch_window: float = Field(
        0.005,
        ge=0,
        description="Seconds concurrent task lookups are gathered into one DescribeTasks.",
    )
    max_pool_connections: int = Field(32, ge=1, description="HTTP connections per AWS client.")

    @field_validator("api_limits")
    @classmethod
    def _merge_limits(cls, value: dict[str, tuple[int, float]]) -> dict[str, tuple[int, float]]:
        unknown = set(value) - set(ECS_API_LIMITS)
        if unknown:
            raise ValueError(f"unknown API categories: {sorted(unknown)}")
        return ECS_API_LIMITS | value

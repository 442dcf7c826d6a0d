"""Settings of the ``ecs`` runtime (``CHROMA_ORCH_ECS__*``), next to its code.

Only pydantic here: ``chroma_orch.settings`` nests this group as ``Settings.ecs``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

Storage = Literal["ebs", "efs", "ephemeral"]

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
    # EFS access points (Create/Describe/DeleteAccessPoint): AWS publishes no rate;
    # a modest bucket, the calls are rare (one per instance, docs/ecs.md "EFS").
    "efs": (10, 5.0),
    # "Request throttling for the Amazon EC2 API" (ec2/latest/devguide/ec2-api-throttling.html):
    # per-API buckets; non-mutating (Describe*) 100 burst / 20/s, mutating (CreateSnapshot,
    # DeleteVolume, DeleteSnapshot) taken at the lower mutating figure.
    "ec2_describe": (100, 20.0),
    "ec2_change": (50, 5.0),
}


class CapacityProviderItem(BaseModel):
    """One item of RunTask's ``capacityProviderStrategy``."""

    capacity_provider: Literal["FARGATE", "FARGATE_SPOT"] = Field(
        description="Fargate capacity provider (the cluster must have it)."
    )
    weight: int = Field(1, ge=0, le=1000, description="Relative share of tasks.")
    base: int = Field(0, ge=0, le=100000, description="Tasks placed here before weights apply.")


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
    image: str | None = Field(
        None,
        description="Full Chroma 1.x image URI (pin a tag); unset: built from IMAGE_REGISTRY, "
        'IMAGE_REPOSITORY and IMAGE_TAG (docs/ecs.md "Images").',
    )
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
        None,
        description="Deprecated and ignored: the service creates an access point per "
        "instance (one shared access point let every server read every tenant's data).",
    )
    efs_root: str = Field(
        "/chroma-orch",
        pattern=r"^/[A-Za-z0-9_./-]*$",
        description="Directory of the EFS file system under which each instance's access "
        "point is rooted: EFS_ROOT/<tenant id>/<instance id>.",
    )
    efs_posix_uid: int = Field(
        1000, ge=0, description="POSIX user id the instances' access points enforce and own."
    )
    efs_posix_gid: int = Field(
        1000, ge=0, description="POSIX group id the instances' access points enforce and own."
    )
    data_mount: str = Field(
        "/data",
        description="Where the instance's storage is mounted in its container (with EFS: the "
        "root of its own access point); Chroma runs with --path DATA_MOUNT.",
    )
    storage: Storage | None = Field(
        None,
        description="Where instance data lives: ebs (an ECS-managed EBS volume per task, "
        "snapshotted on stop and restored on start; SQLite-safe, one tenant per volume), "
        "efs (EFS_FILE_SYSTEM_ID) or ephemeral (dies with the task). Unset: efs when "
        'EFS_FILE_SYSTEM_ID is set, else ebs (docs/ecs.md "Storage").',
    )
    ebs_role_arn: str | None = Field(
        None,
        description="ECS infrastructure role that creates and attaches the EBS volumes "
        "(AmazonECSInfrastructureRolePolicyForVolumes); required with storage=ebs.",
    )
    ebs_size_gib: int = Field(20, ge=1, le=16384, description="Size of each EBS volume (GiB).")
    ebs_volume_type: str = Field("gp3", description="EBS volume type of the data volumes.")
    ebs_filesystem_type: Literal["ext3", "ext4", "xfs"] = Field(
        "ext4",
        description="File system of the data volumes (a volume restored from a snapshot "
        "must keep the type it was made with).",
    )
    ebs_keep_snapshots: int = Field(
        2,
        ge=1,
        description="Stop snapshots kept per instance (the newest; older ones are deleted "
        "once a newer one completed).",
    )
    cleanup_image: str = Field(
        "public.ecr.aws/docker/library/busybox:stable",
        description="Image of the one-shot task that empties a deleted instance's access point.",
    )
    cleanup_timeout: float = Field(
        900.0,
        gt=0,
        description="Seconds a delete waits for the data-removal task to finish before it "
        "is retried (with a new task) and the access point is kept meanwhile.",
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
    launch_budget: float = Field(
        60.0,
        gt=0,
        description="Seconds after a start's recorded 'starting' during which its RunTask "
        "may still be sent (retried under throttling); past it the start sends none and a "
        "later pass retries. A stop of a start that recorded no task waits this plus "
        "visibility_grace before it trusts ListTasks.",
    )
    api_limits: dict[str, tuple[int, float]] = Field(
        default_factory=lambda: dict(ECS_API_LIMITS),
        description="Token buckets per API category: [burst, refill per second]; run "
        "(RunTask calls), launch (tasks launched), stop (StopTask), describe (DescribeTasks, "
        "ListTasks, DescribeTaskDefinition), register (RegisterTaskDefinition), logs "
        "(GetLogEvents), efs (EFS access point calls). Shared by every replica through "
        "the database (AWS counts per account and region). Defaults: AWS's published "
        "Fargate/ECS rates (docs/ecs.md); unnamed categories keep them.",
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
    events_queue_url: str | None = Field(
        None,
        description="SQS queue an EventBridge rule feeds with this cluster's \"ECS Task State "
        'Change" events (docs/ecs.md "Event-driven observation"); set: task states come '
        "from the events, DescribeTasks only for new tasks and the safety sweep; unset: "
        "every liveness pass describes every task.",
    )
    events_sweep_interval: float = Field(
        300.0,
        gt=0,
        description="With the events queue: seconds after which a task's event-known state "
        "is described again (repairs lost events).",
    )
    events_wait_seconds: int = Field(
        20, ge=0, le=20, description="SQS long-polling wait per ReceiveMessage (seconds)."
    )
    max_pool_connections: int = Field(32, ge=1, description="HTTP connections per AWS client.")

    # -- images, capacity and start-up checks (docs/ecs.md "Images", "Capacity") --
    image_registry: str | None = Field(
        None,
        description="Registry host (and path prefix) of the Chroma image; unset: the ECR "
        "pull-through cache ACCOUNT.dkr.ecr.REGION.amazonaws.com/PULL_THROUGH_PREFIX when "
        "the account is known (ACCOUNT_ID, else EXECUTION_ROLE_ARN's), else Docker Hub.",
    )
    image_repository: str = Field("chromadb/chroma", description="Repository of the image.")
    image_tag: str = Field("1.5.9", description="Tag of the image (pin one).")
    chroma_versions: list[str] = Field(
        default_factory=list,
        description="Chroma versions (image tags of the same repository) an instance's spec "
        "may ask for, besides the default one (IMAGE_TAG, or IMAGE's tag); empty: any "
        'well-formed tag (docs/ecs.md "Specs and versions").',
    )
    account_id: str | None = Field(
        None, pattern=r"^[0-9]{12}$", description="AWS account of the ECR pull-through cache."
    )
    pull_through_prefix: str = Field(
        "docker-hub",
        description="ECR repository prefix of the pull-through cache rule for Docker Hub.",
    )
    cpu_architecture: Literal["X86_64", "ARM64"] = Field(
        "X86_64", description="runtimePlatform cpuArchitecture (ARM64: Graviton, ~20% cheaper)."
    )
    capacity_providers: list[CapacityProviderItem] = Field(
        default_factory=list,
        description='RunTask capacityProviderStrategy, e.g. [{"capacity_provider": '
        '"FARGATE_SPOT", "weight": 1}]; empty: launchType FARGATE (on demand).',
    )
    stop_timeout: int = Field(
        30,
        ge=2,
        le=120,
        description="Seconds between SIGTERM and SIGKILL on a stop (container stopTimeout; "
        "Fargate allows up to 120), so Chroma can flush.",
    )
    ephemeral_storage: int | None = Field(
        None,
        ge=21,
        le=200,
        description="Task ephemeral storage in GiB (21-200); unset: Fargate's 20 GiB.",
    )
    create_log_group: bool = Field(
        False,
        description="Let the awslogs driver create LOG_GROUP (awslogs-create-group; the "
        "execution role then needs logs:CreateLogGroup).",
    )
    startup_check: Literal["fail", "warn", "off"] = Field(
        "fail",
        description="The start-up check of cluster, subnets, security groups, log group, "
        "roles, task size and image (`chroma-orch ecs check`): fail (errors stop the "
        "service), warn (only logged) or off.",
    )

    @property
    def storage_mode(self) -> Storage:
        """``storage``, or what an unset one means (efs with a file system, else ebs)."""
        if self.storage is not None:
            return self.storage
        return "efs" if self.efs_file_system_id else "ebs"

    @field_validator("api_limits")
    @classmethod
    def _merge_limits(cls, value: dict[str, tuple[int, float]]) -> dict[str, tuple[int, float]]:
        unknown = set(value) - set(ECS_API_LIMITS)
        if unknown:
            raise ValueError(f"unknown API categories: {sorted(unknown)}")
        return ECS_API_LIMITS | value

"""Pure helpers of the ``ecs`` runtime: task definitions, RunTask parameters,
handles, tags, and the mapping of a described task onto an ``Observation``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from chroma_orch.runtimes.base import (
    Endpoint,
    Handle,
    InstanceSpec,
    Observation,
    ObservedState,
    ServerSpec,
    StartPhase,
)
from chroma_orch.runtimes.ecs.images import server_image
from chroma_orch.runtimes.ecs.phases import phase_times, start_phase
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.specs import CPU_ARCHITECTURES, filled
from chroma_orch.runtimes.ecs.stops import classify_stop
from chroma_orch.runtimes.server_settings import CONFIG_FILE_NAME, server_config

TAG_INSTANCE = "chroma-orch:instance"
TAG_TENANT = "chroma-orch:tenant"
TAG_GENERATION = "chroma-orch:generation"
CLEANUP_CONTAINER = "cleanup"
VOLUME_NAME = "data"

STARTING_STATUSES = frozenset({"PROVISIONING", "PENDING", "ACTIVATING"})
STOPPING_STATUSES = frozenset({"DEACTIVATING", "STOPPING", "DEPROVISIONING"})
CONFIG_VARIABLE = "ORCH_SERVER_CONFIG"
"""The container's variable holding its server config file (no ``CHROMA_`` prefix:
Chroma reads its own variables under it)."""
CONFIG_ENTRYPOINT = ["dumb-init", "--", "sh", "-c"]
"""The image's own init (its ENTRYPOINT is ``dumb-init -- chroma``) before a shell
that writes the config file and execs ``chroma run FILE``."""


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in sorted(tags.items())]


def server_command(settings: EcsSettings, server: ServerSpec) -> list[str]:
    """The container's command: without server settings, ``chroma run`` flags (the
    image's entrypoint is ``dumb-init -- chroma``); with them, the script of
    ``CONFIG_ENTRYPOINT`` (Chroma takes a config file or flags, never both). The data
    directory is the mount itself (with EFS, the root of the instance's own access
    point)."""
    port = str(settings.container_port)
    if not server.settings:
        return ["run", "--path", settings.data_mount, "--host", "0.0.0.0", "--port", port]  # noqa: S104
    path = f"/tmp/{CONFIG_FILE_NAME}"  # noqa: S108 (the container's own /tmp)
    script = f"printf '%s' \"${CONFIG_VARIABLE}\" > {path} && exec chroma run {path}"
    return [script]


def _server_config(settings: EcsSettings, server: ServerSpec) -> list[dict[str, str]]:
    """The container's variables: its config file, when the spec has settings."""
    if not server.settings:
        return []
    config = server_config(
        server.settings,
        persist_path=settings.data_mount,
        host="0.0.0.0",  # noqa: S104 (the task's own interface)
        port=settings.container_port,
    )
    return [{"name": CONFIG_VARIABLE, "value": config}]


def _volumes(
    settings: EcsSettings, access_point_id: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The data volume: with EBS, one given by RunTask (``volumes.py``); with EFS,
    only ever through the instance's own access point (IAM authorization on, so the
    file system policy can insist on access points)."""
    mount = {"sourceVolume": VOLUME_NAME, "containerPath": settings.data_mount, "readOnly": False}
    mounts = [mount]
    if settings.storage_mode == "ebs":
        return [{"name": VOLUME_NAME, "configuredAtLaunch": True}], mounts
    if settings.storage_mode != "efs" or not settings.efs_file_system_id:
        return [], []
    if not access_point_id:
        raise ValueError("an EFS volume needs the instance's access point")
    efs: dict[str, Any] = {
        "fileSystemId": settings.efs_file_system_id,
        "transitEncryption": "ENABLED",
        "authorizationConfig": {"accessPointId": access_point_id, "iam": "ENABLED"},
    }
    return [{"name": VOLUME_NAME, "efsVolumeConfiguration": efs}], mounts


def _definition(
    settings: EcsSettings,
    container: dict[str, Any],
    cpu: int,
    memory: int,
    access_point_id: str | None,
    architecture: str,
) -> dict[str, Any]:
    volumes, mounts = _volumes(settings, access_point_id)
    container = container | {
        "essential": True,
        "memory": memory,  # also needed by moto's Fargate
        "mountPoints": mounts,
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": settings.log_group,
                "awslogs-region": settings.region,
                "awslogs-stream-prefix": settings.log_stream_prefix,
            }
            | ({"awslogs-create-group": "true"} if settings.create_log_group else {}),
        },
    }
    params: dict[str, Any] = {
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": str(cpu),
        "memory": str(memory),
        "containerDefinitions": [container],
        "volumes": volumes,
        "runtimePlatform": {
            "cpuArchitecture": architecture,
            "operatingSystemFamily": "LINUX",
        },
    }
    if settings.execution_role_arn:
        params["executionRoleArn"] = settings.execution_role_arn
    if settings.task_role_arn:
        params["taskRoleArn"] = settings.task_role_arn
    if settings.tags:
        params["tags"] = _tag_list(settings.tags)
    return params


def health_check(settings: EcsSettings) -> dict[str, Any]:
    """The container's ECS healthCheck: Chroma's heartbeat asked with bash's /dev/tcp
    and ``read`` builtins, as the image (debian-slim) has bash but no curl or wget.
    Intervals as AWS allows them (interval 5-300 s, timeout 2-60 s, retries 1-10,
    startPeriod 0-300 s: the HealthCheck API reference)."""
    port = settings.container_port
    probe = (
        f"exec 3<>/dev/tcp/127.0.0.1/{port} && "
        "printf 'GET /api/v2/heartbeat HTTP/1.0\\r\\n\\r\\n' >&3 && "
        "read -r -t 4 status <&3 && [[ $status == *' 200 '* ]]"
    )
    return {
        "command": ["CMD", "bash", "-c", probe],
        "interval": 15,
        "timeout": 5,
        "retries": 3,
        "startPeriod": 60,
    }


def server_definition(
    settings: EcsSettings, server: ServerSpec, access_point_id: str | None = None
) -> dict[str, Any]:
    """RegisterTaskDefinition parameters (``family`` included) for a server spec
    (a None field is the settings' default, so an old ``{}`` spec gets
    the definition it always had); with EFS, for one instance's access point (a
    definition of its own). Server settings live in the definition (its family)."""
    given = filled(settings, server)
    container: dict[str, Any] = {
        "name": settings.container_name,
        "image": server_image(settings, given.tag).uri,
        "portMappings": [{"containerPort": settings.container_port, "protocol": "tcp"}],
        "environment": [
            {"name": "ANONYMIZED_TELEMETRY", "value": "False"},
            *_server_config(settings, server),
        ],
        "stopTimeout": settings.stop_timeout,  # SIGTERM to SIGKILL: Chroma flushes
    }
    if server.settings:
        container["entryPoint"] = CONFIG_ENTRYPOINT
        container["command"] = server_command(settings, server)
    if settings.container_health_check:
        container["healthCheck"] = health_check(settings)
    architecture = CPU_ARCHITECTURES[given.architecture]
    params = _definition(
        settings, container, given.cpu, given.memory, access_point_id, architecture
    )
    if settings.ephemeral_storage is not None:
        params["ephemeralStorage"] = {"sizeInGiB": settings.ephemeral_storage}
    return _with_family(settings, params, access_point_id or "")


def cleanup_definition(settings: EcsSettings, access_point_id: str) -> dict[str, Any]:
    """A one-shot task that empties a deleted instance's access point."""
    container = {"name": CLEANUP_CONTAINER, "image": settings.cleanup_image, "entryPoint": ["sh"]}
    params = _definition(settings, container, 256, 512, access_point_id, settings.cpu_architecture)
    return _with_family(settings, params, f"{access_point_id}-cleanup")


def cleanup_command(settings: EcsSettings) -> list[str]:
    """``sh`` arguments that remove everything below the mount (the access point's
    root itself cannot be removed through it, and stays, empty)."""
    mount = settings.data_mount.rstrip("/") or "/"
    script = f"cd '{mount}' && rm -rf -- ./* ./.[!.]* ./..?*"
    return ["-c", script]


def family_scope(settings: EcsSettings, access_point_id: str) -> str:
    """The prefix of every task definition family that mounts ``access_point_id``."""
    return f"{settings.family_prefix}-{access_point_id}-"


def _with_family(settings: EcsSettings, params: dict[str, Any], kind: str = "") -> dict[str, Any]:
    """Family = prefix + hash of everything registered: equal specs share one definition
    (``kind`` scopes it, e.g. to an access point)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    middle = f"-{kind}" if kind else ""
    return params | {"family": f"{settings.family_prefix}{middle}-{digest}"}


def placement(settings: EcsSettings) -> dict[str, Any]:
    """RunTask's ``launchType`` FARGATE, or the ``capacityProviderStrategy`` (Fargate
    Spot) when CAPACITY_PROVIDERS names one (RunTask takes one or the other)."""
    if not settings.capacity_providers:
        return {"launchType": "FARGATE"}
    strategy = [
        {"capacityProvider": item.capacity_provider, "weight": item.weight, "base": item.base}
        for item in settings.capacity_providers
    ]
    return {"capacityProviderStrategy": strategy}


def network_configuration(settings: EcsSettings) -> dict[str, Any]:
    return {
        "awsvpcConfiguration": {
            "subnets": settings.subnets,
            "securityGroups": settings.security_groups,
            "assignPublicIp": "ENABLED" if settings.assign_public_ip else "DISABLED",
        }
    }


def instance_tags(settings: EcsSettings, spec: InstanceSpec) -> list[dict[str, str]]:
    own = {
        TAG_INSTANCE: spec.instance_id,
        TAG_TENANT: spec.tenant_id,
        TAG_GENERATION: str(spec.generation),
    }
    return _tag_list(settings.tags | own)


def client_token(spec: InstanceSpec) -> str:
    """RunTask's idempotency token (≤ 64 characters), one per start attempt."""
    token = spec.start_token or f"{spec.instance_id}-{spec.generation}"
    if len(token) > 64:
        token = hashlib.sha256(token.encode()).hexdigest()[:64]
    return token


def tags_of(task: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["key"]): str(t["value"]) for t in task.get("tags") or [] if "key" in t}


def make_handle(
    cluster: str,
    task_arn: str,
    instance_id: str,
    generation: int | None,
    launched_at: float | None = None,
) -> Handle:
    """``launched_at`` (epoch seconds of the RunTask that answered with the task) lets
    a poll tell a task not visible yet from one that is gone."""
    data: dict[str, Any] = {"instance_id": instance_id, "task_arn": task_arn, "cluster": cluster}
    if launched_at is not None:
        data["launched_at"] = launched_at
    return Handle(generation, data)


def not_visible_yet(handle: Handle, now: float, grace: float) -> bool:
    """The handle's task was launched less than ``grace`` seconds ago: DescribeTasks
    may not know it yet (ECS API eventual consistency)."""
    launched_at = handle.data.get("launched_at")
    return isinstance(launched_at, int | float) and now - float(launched_at) < grace


INVISIBLE = Observation(
    ObservedState.STARTING,
    message="ECS task launched, not visible to DescribeTasks yet",
    phase=StartPhase.PROVISIONING,  # RunTask answered: every task begins there
)


def task_ip(task: Mapping[str, Any]) -> str | None:
    """The private IP of the task's ENI (found by attachment type and detail name)."""
    for attachment in task.get("attachments") or []:
        if attachment.get("type") != "ElasticNetworkInterface":
            continue
        for detail in attachment.get("details") or []:
            if detail.get("name") == "privateIPv4Address" and detail.get("value"):
                return str(detail["value"])
    return None


def is_live(task: Mapping[str, Any]) -> bool:
    """Launched for good and not on its way out (what may be adopted)."""
    return task.get("desiredStatus") == "RUNNING" and task.get("lastStatus") != "STOPPED"


def observe_task(task: Mapping[str, Any] | None, port: int) -> Observation:
    """What ECS says about a task (the heartbeat check comes on top, in the runtime)."""
    if task is None:
        return Observation(
            ObservedState.EXITED, reason="TaskMissing", message="ECS has no such task"
        )
    status = str(task.get("lastStatus") or "PROVISIONING")
    ip = task_ip(task)
    endpoint = Endpoint(ip, port) if ip else None
    if status == "STOPPED":
        return _stopped(task)
    if status in STOPPING_STATUSES or task.get("desiredStatus") == "STOPPED":
        return Observation(ObservedState.STOPPING, endpoint=endpoint, message=status)
    phase, times = start_phase(task), phase_times(task)
    if status == "RUNNING" and endpoint is not None:
        return Observation(ObservedState.RUNNING, endpoint=endpoint, phase=phase, phase_times=times)
    return Observation(
        ObservedState.STARTING,
        endpoint=endpoint,
        message=f"ECS task {status}",
        phase=phase,
        phase_times=times,
    )


def _stopped(task: Mapping[str, Any]) -> Observation:
    reason, cause = classify_stop(task)
    parts = [str(task.get("stoppedReason") or "the task stopped")]
    for container in task.get("containers") or []:
        detail = container.get("reason")
        code = container.get("exitCode")
        if detail or code not in (None, 0):
            parts.append(f"container {container.get('name')}: exit code {code} {detail or ''}")
    message = "; ".join(parts).strip()
    return Observation(ObservedState.EXITED, reason=reason, message=message, cause=cause)

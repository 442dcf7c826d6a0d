"""The ``ecs`` runtime's start-up check: is the AWS side set up as the settings say?

Run when the service starts with the ECS runtime (``STARTUP_CHECK``: ``fail`` stops
the start on errors, ``warn`` only logs) and by ``chroma-orch ecs check``. Each
problem is one line naming what is wrong, so a missing subnet or an invalid task
size shows at start-up instead of as ``TaskFailedToStart`` at the first launch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from chroma_orch.runtimes.base import RuntimeMisconfiguredError
from chroma_orch.runtimes.ecs import sg_rules
from chroma_orch.runtimes.ecs.api import EcsApi
from chroma_orch.runtimes.ecs.images import ImageSource, server_image
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.sizes import size_problem
from chroma_orch.runtimes.ecs.throttle import error_code, retrying

log = logging.getLogger(__name__)

HTTPS, NFS = 443, 2049


@dataclass(frozen=True)
class Problem:
    severity: Literal["error", "warning"]
    check: str
    message: str

    def line(self) -> str:
        return f"{self.severity}: {self.check}: {self.message}"


def _error(check: str, message: str) -> Problem:
    return Problem("error", check, message)


def _warning(check: str, message: str) -> Problem:
    return Problem("warning", check, message)


async def _ask(api: EcsApi, service: str, method: str, **params: Any) -> dict[str, Any]:
    client = await api.client(service)

    async def once() -> dict[str, Any]:
        answer: dict[str, Any] = await getattr(client, method)(**params)
        return answer

    return await retrying(once, api.policy, what=method)


def _failed(check: str, exc: Exception, missing: dict[str, str]) -> Problem:
    """An AWS error as a problem: ``missing`` maps not-found error codes to a message."""
    code = error_code(exc)
    if code in missing:
        return _error(check, missing[code])
    return _error(check, f"cannot check: {code or type(exc).__name__}: {exc}")


async def check_cluster(api: EcsApi, s: EcsSettings) -> list[Problem]:
    try:
        answer = await _ask(api, "ecs", "describe_clusters", clusters=[s.cluster])
    except Exception as exc:
        return [_failed("cluster", exc, {})]
    if not answer.get("clusters"):
        return [_error("cluster", f"cluster {s.cluster!r} does not exist")]
    cluster = answer["clusters"][0]
    if cluster.get("status") != "ACTIVE":
        return [_error("cluster", f"cluster {s.cluster!r} is {cluster.get('status')}, not ACTIVE")]
    attached = set(cluster.get("capacityProviders") or [])
    return [
        _error(
            "cluster",
            f"cluster {s.cluster!r} lacks capacity provider {item.capacity_provider} of "
            f"CAPACITY_PROVIDERS (aws ecs put-cluster-capacity-providers)",
        )
        for item in s.capacity_providers
        if item.capacity_provider not in attached
    ]


async def check_network(api: EcsApi, s: EcsSettings) -> list[Problem]:
    if not s.subnets:
        return [_error("subnets", "SUBNETS is empty: tasks need at least one subnet")]
    try:
        answer = await _ask(api, "ec2", "describe_subnets", SubnetIds=s.subnets)
    except Exception as exc:
        return [_failed("subnets", exc, {"InvalidSubnetID.NotFound": str(exc)})]
    vpcs = sorted({str(subnet["VpcId"]) for subnet in answer.get("Subnets") or []})
    if len(vpcs) > 1:
        return [_error("subnets", f"SUBNETS are in several VPCs ({', '.join(vpcs)}), not one")]
    return await check_security_groups(api, s, vpcs[0] if vpcs else None)


async def check_security_groups(api: EcsApi, s: EcsSettings, vpc: str | None) -> list[Problem]:
    if not s.security_groups:
        return [_error("security groups", "SECURITY_GROUPS is empty (docs/ecs.md layout)")]
    try:
        answer = await _ask(api, "ec2", "describe_security_groups", GroupIds=s.security_groups)
    except Exception as exc:
        return [_failed("security groups", exc, {"InvalidGroup.NotFound": str(exc)})]
    groups = answer.get("SecurityGroups") or []
    problems = [
        _error("security groups", f"{g['GroupId']} is in {g.get('VpcId')}, the subnets in {vpc}")
        for g in groups
        if vpc and g.get("VpcId") != vpc
    ]
    problems += [
        _error("security groups", p) for p in sg_rules.ingress_problems(groups, s.container_port)
    ]
    if not sg_rules.admits(groups, s.container_port):
        problems.append(
            _warning(
                "security groups",
                f"no rule admits tcp {s.container_port}: the service cannot reach Chroma",
            )
        )
    needs = [HTTPS] + ([NFS] if s.efs_file_system_id else [])
    problems += [
        _error("security groups", f"no egress rule allows tcp {port} (image pulls, logs, EFS)")
        for port in needs
        if not sg_rules.admits(groups, port, "IpPermissionsEgress")
    ]
    return problems


async def check_log_group(api: EcsApi, s: EcsSettings) -> list[Problem]:
    try:
        answer = await _ask(api, "logs", "describe_log_groups", logGroupNamePrefix=s.log_group)
    except Exception as exc:
        return [_failed("log group", exc, {})]
    if any(g.get("logGroupName") == s.log_group for g in answer.get("logGroups") or []):
        return []
    if s.create_log_group:
        return []  # the awslogs driver creates it (awslogs-create-group)
    return [
        _error(
            "log group",
            f"log group {s.log_group!r} does not exist (aws logs create-log-group "
            f"--log-group-name {s.log_group}, or CREATE_LOG_GROUP=true)",
        )
    ]


async def check_roles(api: EcsApi, s: EcsSettings) -> list[Problem]:
    problems: list[Problem] = []
    if not s.execution_role_arn:
        problems.append(
            _error("roles", "EXECUTION_ROLE_ARN is unset: Fargate needs it for awslogs and ECR")
        )
    for setting, arn in (
        ("EXECUTION_ROLE_ARN", s.execution_role_arn),
        ("TASK_ROLE_ARN", s.task_role_arn),
    ):
        if arn:
            problems += await _check_role(api, setting, arn)
    return problems


async def _check_role(api: EcsApi, setting: str, arn: str) -> list[Problem]:
    name = arn.rsplit("/", 1)[-1]
    try:
        role = (await _ask(api, "iam", "get_role", RoleName=name))["Role"]
    except Exception as exc:
        return [_failed("roles", exc, {"NoSuchEntity": f"{setting} {arn}: no such role"})]
    if "ecs-tasks.amazonaws.com" not in unquote(str(role.get("AssumeRolePolicyDocument"))):
        return [_error("roles", f"{setting} {arn} does not trust ecs-tasks.amazonaws.com")]
    return []


def check_size(s: EcsSettings) -> list[Problem]:
    problem = size_problem(s.cpu, s.memory)
    return [_error("task size", f"CPU/MEMORY: {problem}")] if problem else []


def check_image(s: EcsSettings) -> list[Problem]:
    image = server_image(s)
    if image.private_ecr and not s.execution_role_arn:
        return [_error("image", f"{image.uri} is in private ECR: set EXECUTION_ROLE_ARN")]
    if image.docker_hub:
        return [
            _warning(
                "image",
                f"{image.uri} comes from Docker Hub, anonymously: 10 pulls per hour per IP, so "
                "tasks behind one NAT fail to start (ImagePullThrottled); use the ECR "
                'pull-through cache (set ACCOUNT_ID or IMAGE_REGISTRY, docs/ecs.md "Images")',
            )
        ]
    if image.source is ImageSource.PULL_THROUGH:
        log.info("image %s (ECR pull-through cache; the rule must exist)", image.uri)
    return []


async def run_checks(api: EcsApi, s: EcsSettings) -> list[Problem]:
    """Every check, the AWS ones concurrently; the problems found, errors first."""
    asked: list[Callable[[EcsApi, EcsSettings], Awaitable[list[Problem]]]] = [
        check_cluster,
        check_network,
        check_log_group,
        check_roles,
    ]
    found = await asyncio.gather(*(check(api, s) for check in asked))
    problems = [p for part in found for p in part] + check_size(s) + check_image(s)
    return sorted(problems, key=lambda p: p.severity != "error")


async def check(s: EcsSettings) -> list[Problem]:
    """``run_checks`` with an API client of its own (the CLI)."""
    api = EcsApi(s)
    try:
        return await run_checks(api, s)
    finally:
        await api.aclose()


async def enforce(api: EcsApi, s: EcsSettings) -> None:
    """The start-up check as STARTUP_CHECK says: log every problem, one line each;
    with ``fail``, raise ``RuntimeMisconfiguredError`` when any is an error."""
    if s.startup_check == "off":
        return
    problems = await run_checks(api, s)
    for problem in problems:
        level = logging.ERROR if problem.severity == "error" else logging.WARNING
        log.log(level, "ecs check %s", problem.line())
    errors = [p.line() for p in problems if p.severity == "error"]
    if errors and s.startup_check == "fail":
        raise RuntimeMisconfiguredError(
            "the ECS start-up check failed (CHROMA_ORCH_ECS__STARTUP_CHECK=warn to start "
            "anyway):\n" + "\n".join(errors)
        )
    if not problems:
        log.info("ecs check passed cluster=%s", s.cluster)

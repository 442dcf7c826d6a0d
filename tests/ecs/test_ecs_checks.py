"""The ECS start-up check (runtimes/ecs/checks.py) against moto: each check finds
its problem and names it in one line; the service refuses to start on errors
(STARTUP_CHECK=fail, the default) and starts with warn; `chroma-orch ecs check`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chroma_orch.app import create_app
from chroma_orch.cli import main
from chroma_orch.runtimes.base import RuntimeMisconfiguredError
from chroma_orch.runtimes.ecs.checks import check
from chroma_orch.runtimes.ecs.sizes import size_problem
from chroma_orch.settings import EcsSettings
from tests.conftest import make_settings
from tests.ecs.conftest import CLUSTER, aws_client, reconciler_settings


async def _lines(settings: EcsSettings, **changes: Any) -> list[str]:
    return [p.line() for p in await check(settings.model_copy(update=changes))]


async def _vpc_of(moto_url: str, settings: EcsSettings) -> str:
    async with aws_client(moto_url, "ec2") as ec2:
        subnets = await ec2.describe_subnets(SubnetIds=settings.subnets)
        return str(subnets["Subnets"][0]["VpcId"])


async def test_the_documented_layout_passes(ecs_settings: EcsSettings) -> None:
    assert await _lines(ecs_settings) == []


async def test_a_missing_or_inactive_cluster(ecs_settings: EcsSettings, moto_url: str) -> None:
    assert await _lines(ecs_settings, cluster="nope") == [
        "error: cluster: cluster 'nope' does not exist"
    ]
    async with aws_client(moto_url, "ecs") as ecs:
        await ecs.delete_cluster(cluster=CLUSTER)
    lines = await _lines(ecs_settings)
    assert lines in (
        [f"error: cluster: cluster '{CLUSTER}' does not exist"],
        [f"error: cluster: cluster '{CLUSTER}' is INACTIVE, not ACTIVE"],
    )


async def test_spot_needs_the_capacity_provider_on_the_cluster(
    ecs_settings: EcsSettings, moto_url: str
) -> None:
    spot = [{"capacity_provider": "FARGATE_SPOT", "weight": 1}]
    settings = EcsSettings.model_validate(ecs_settings.model_dump() | {"capacity_providers": spot})
    assert await _lines(settings) == [
        f"error: cluster: cluster '{CLUSTER}' lacks capacity provider FARGATE_SPOT of "
        "CAPACITY_PROVIDERS (aws ecs put-cluster-capacity-providers)"
    ]
    async with aws_client(moto_url, "ecs") as ecs:
        await ecs.put_cluster_capacity_providers(
            cluster=CLUSTER,
            capacityProviders=["FARGATE", "FARGATE_SPOT"],
            defaultCapacityProviderStrategy=[],
        )
    assert await _lines(settings) == []


async def test_missing_subnets_and_subnets_in_two_vpcs(
    ecs_settings: EcsSettings, moto_url: str
) -> None:
    (missing,) = await _lines(ecs_settings, subnets=["subnet-0123456789abcdef0"])
    assert missing.startswith("error: subnets: ")
    assert "subnet-0123456789abcdef0" in missing
    assert await _lines(ecs_settings, subnets=[]) == [
        "error: subnets: SUBNETS is empty: tasks need at least one subnet"
    ]
    async with aws_client(moto_url, "ec2") as ec2:
        other = (await ec2.create_vpc(CidrBlock="10.1.0.0/16"))["Vpc"]["VpcId"]
        subnet = (await ec2.create_subnet(VpcId=other, CidrBlock="10.1.0.0/20"))["Subnet"]
    (line,) = await _lines(ecs_settings, subnets=[*ecs_settings.subnets, subnet["SubnetId"]])
    assert line.startswith("error: subnets: SUBNETS are in several VPCs (")


async def _ingress(moto_url: str, group: str, **source: Any) -> None:
    rule = {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535} | source
    async with aws_client(moto_url, "ec2") as ec2:
        await ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[rule])


async def test_a_group_open_to_anywhere_is_named_with_its_rule(
    ecs_settings: EcsSettings, moto_url: str
) -> None:
    (group,) = ecs_settings.security_groups
    await _ingress(moto_url, group, IpRanges=[{"CidrIp": "0.0.0.0/0"}])
    assert await _lines(ecs_settings) == [
        f"error: security groups: {group} admits anywhere on tcp 8000 "
        "(rule: tcp 0-65535 from 0.0.0.0/0)"
    ]


async def test_tasks_admitting_each_other_are_named(
    ecs_settings: EcsSettings, moto_url: str
) -> None:
    (group,) = ecs_settings.security_groups
    await _ingress(moto_url, group, UserIdGroupPairs=[{"GroupId": group}])
    assert await _lines(ecs_settings) == [
        f"error: security groups: {group} admits the tasks' own group on tcp 8000: tenants' "
        f"servers can reach each other (rule: tcp 0-65535 from {group})"
    ]


async def test_missing_groups_no_ingress_and_no_egress(
    ecs_settings: EcsSettings, moto_url: str
) -> None:
    (missing,) = await _lines(ecs_settings, security_groups=["sg-0123456789abcdef0"])
    assert missing.startswith("error: security groups: ")
    assert "sg-0123456789abcdef0" in missing
    async with aws_client(moto_url, "ec2") as ec2:
        vpc = await _vpc_of(moto_url, ecs_settings)
        bare = await ec2.create_security_group(GroupName="b", Description="x", VpcId=vpc)
        await ec2.revoke_security_group_egress(
            GroupId=bare["GroupId"],
            IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
        )
    assert await _lines(ecs_settings, security_groups=[bare["GroupId"]]) == [
        "error: security groups: no egress rule allows tcp 443 (image pulls, logs, EFS)",
        "warning: security groups: no rule admits tcp 8000: the service cannot reach Chroma",
    ]


async def test_a_missing_log_group_unless_the_driver_creates_it(
    ecs_settings: EcsSettings,
) -> None:
    assert await _lines(ecs_settings, log_group="/nope") == [
        "error: log group: log group '/nope' does not exist (aws logs create-log-group "
        "--log-group-name /nope, or CREATE_LOG_GROUP=true)"
    ]
    assert await _lines(ecs_settings, log_group="/nope", create_log_group=True) == []


async def test_roles_exist_and_trust_ecs_tasks(ecs_settings: EcsSettings, moto_url: str) -> None:
    arn = "arn:aws:iam::123456789012:role/task"
    assert await _lines(ecs_settings, task_role_arn=arn) == [
        f"error: roles: TASK_ROLE_ARN {arn}: no such role"
    ]
    async with aws_client(moto_url, "iam") as iam:
        await iam.create_role(RoleName="task", AssumeRolePolicyDocument="{}")
    assert await _lines(ecs_settings, task_role_arn=arn) == [
        f"error: roles: TASK_ROLE_ARN {arn} does not trust ecs-tasks.amazonaws.com"
    ]
    lines = await _lines(ecs_settings, execution_role_arn=None)
    assert (
        "error: roles: EXECUTION_ROLE_ARN is unset: Fargate needs it for awslogs and ECR" in lines
    )


@pytest.mark.parametrize(
    ("cpu", "memory", "problem"),
    [
        (1024, 2048, None),
        (256, 512, None),
        (
            256,
            4096,
            "4096 MiB is not valid with 0.25 vCPU on Fargate "
            "(0.25 vCPU allows 512, 1024 or 2048 MiB)",
        ),
        (
            1024,
            1024,
            "1024 MiB is not valid with 1 vCPU on Fargate "
            "(1 vCPU allows 2048-8192 MiB in 1024 MiB steps)",
        ),
        (
            8192,
            18 * 1024,
            "18432 MiB is not valid with 8 vCPU on Fargate "
            "(8 vCPU allows 16384-61440 MiB in 4096 MiB steps)",
        ),
        (16384, 32 * 1024, None),
        (
            1000,
            2048,
            "1000 CPU units is not a Fargate task size (Fargate takes 256 (0.25 vCPU), "
            "512 (0.5 vCPU), 1024 (1 vCPU), 2048 (2 vCPU), 4096 (4 vCPU), 8192 (8 vCPU), "
            "16384 (16 vCPU))",
        ),
    ],
)
def test_fargate_sizes(cpu: int, memory: int, problem: str | None) -> None:
    assert size_problem(cpu, memory) == problem


async def test_an_invalid_task_size_is_an_error(ecs_settings: EcsSettings) -> None:
    assert await _lines(ecs_settings, cpu=256, memory=4096) == [
        "error: task size: CPU/MEMORY: 4096 MiB is not valid with 0.25 vCPU on Fargate "
        "(0.25 vCPU allows 512, 1024 or 2048 MiB)"
    ]


async def test_docker_hub_is_a_loud_warning(ecs_settings: EcsSettings) -> None:
    (line,) = await _lines(ecs_settings, image="chromadb/chroma:1.5.9")
    assert line.startswith("warning: image: chromadb/chroma:1.5.9 comes from Docker Hub")
    assert "10 pulls per hour per IP" in line


async def test_the_service_refuses_to_start_on_errors_and_starts_with_warn(
    database_url: str, tmp_path: Path, ecs_settings: EcsSettings
) -> None:
    bad = ecs_settings.model_copy(update={"log_group": "/nope", "cpu": 1000})
    settings = make_settings(
        database_url, tmp_path / "data", runtime="ecs", ecs=bad, reconciler=reconciler_settings()
    )
    app = create_app(settings)
    with pytest.raises(RuntimeMisconfiguredError) as failed:
        async with app.router.lifespan_context(app):
            pass
    lines = str(failed.value).splitlines()[1:]
    assert [line.split(":")[1].strip() for line in lines] == ["log group", "task size"]

    warned = settings.model_copy(update={"ecs": bad.model_copy(update={"startup_check": "warn"})})
    app = create_app(warned)
    async with app.router.lifespan_context(app):
        assert app.state.ctx.runtime.name == "ecs"


def test_the_cli_prints_one_line_per_problem(
    ecs_settings: EcsSettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in ecs_settings.model_dump(mode="json", exclude_none=True).items():
        if isinstance(value, str | int | float | bool):
            monkeypatch.setenv(f"CHROMA_ORCH_ECS__{name.upper()}", str(value))
    monkeypatch.setenv("CHROMA_ORCH_ECS__SUBNETS", f'["{ecs_settings.subnets[0]}"]')
    monkeypatch.setenv("CHROMA_ORCH_ECS__SECURITY_GROUPS", f'["{ecs_settings.security_groups[0]}"]')
    assert main(["ecs", "check"]) == 0
    assert "ecs check passed" in capsys.readouterr().out
    monkeypatch.setenv("CHROMA_ORCH_ECS__LOG_GROUP", "/nope")
    assert main(["ecs", "check"]) == 1
    assert capsys.readouterr().out.startswith("error: log group: log group '/nope' does not exist")

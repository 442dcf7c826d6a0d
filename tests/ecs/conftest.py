"""Fixtures for the ``ecs`` runtime: moto's server standing in for AWS, a VPC and a
cluster in it, and the service built with the ecs runtime.

moto quirks handled here (see FACTS.md): tasks are frozen in their state (moto
would otherwise advance one state per DescribeTasks), the VPC has DNS host names
on, and every test starts from a reset moto.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aioboto3
import httpx
import pytest
from aiobotocore.config import AioConfig
from fastapi import FastAPI

from chroma_orch.app import create_app
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.settings import EcsSettings, ReconcilerSettings
from tests.conftest import ADMIN_TOKEN, make_settings
from tests.ecs.aws_behaviour import AwsBehaviour, AwsBehaviourProxy
from tests.helpers import wait_for
from tests.moto_server import REGION as REGION
from tests.moto_server import fake_aws_credentials, run_moto_server

CLUSTER = "tenants"
LOG_GROUP = "/chroma-orch/test"
TASK_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


moto_url = pytest.fixture(scope="session", name="moto_url")(run_moto_server)


def _moto_api(url: str, path: str, body: dict[str, Any] | None = None) -> None:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(url + path, data=data, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        response.read()


@pytest.fixture(scope="session")
def _aws_proxy(moto_url: str) -> Iterator[AwsBehaviourProxy]:
    proxy = AwsBehaviourProxy(moto_url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def aws(_aws_proxy: AwsBehaviourProxy) -> AwsBehaviour:
    """The AWS-behaviour layer (tests/ecs/aws_behaviour.py) the runtime talks through,
    reset for the test."""
    _aws_proxy.behaviour.reset()
    return _aws_proxy.behaviour


@pytest.fixture(autouse=True)
def _aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_aws_credentials(monkeypatch, tmp_path)


def aws_client(moto_url: str, service: str) -> Any:
    config = AioConfig(retries={"total_max_attempts": 1})
    return aioboto3.Session(region_name=REGION).client(
        service, endpoint_url=moto_url, config=config
    )


@pytest.fixture
async def ecs_settings(
    moto_url: str, _aws_proxy: AwsBehaviourProxy, aws: AwsBehaviour
) -> EcsSettings:
    """A fresh account (``aws_account``) reached through the AWS-behaviour layer."""
    return await aws_account(moto_url, _aws_proxy.url)


async def aws_account(moto_url: str, endpoint_url: str) -> EcsSettings:
    """A fresh moto with a VPC, subnet, the tasks' security group (admitting the
    service's group on the Chroma port), cluster, log group and execution role:
    everything the start-up check asks for; settings for a runtime that reaches it at
    ``endpoint_url`` (the AWS-behaviour layer)."""
    _moto_api(moto_url, "/moto-api/reset")
    transition = {"progression": "manual", "times": 1_000_000_000}
    _moto_api(
        moto_url,
        "/moto-api/state-manager/set-transition",
        {"model_name": "ecs::task", "transition": transition},
    )
    async with aws_client(moto_url, "ec2") as ec2:
        vpc = (await ec2.create_vpc(CidrBlock="10.0.0.0/16"))["Vpc"]["VpcId"]
        await ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = (await ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/18"))["Subnet"]
        group = await ec2.create_security_group(GroupName="chroma", Description="x", VpcId=vpc)
        service = await ec2.create_security_group(GroupName="svc", Description="x", VpcId=vpc)
        await ec2.authorize_security_group_ingress(  # the layout of docs/ecs.md
            GroupId=group["GroupId"],
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 8000,
                    "ToPort": 8000,
                    "UserIdGroupPairs": [{"GroupId": service["GroupId"]}],
                }
            ],
        )
    async with aws_client(moto_url, "iam") as iam:
        await iam.create_role(RoleName="exec", AssumeRolePolicyDocument=TASK_TRUST)
    async with aws_client(moto_url, "ecs") as ecs:
        await ecs.create_cluster(clusterName=CLUSTER)
    async with aws_client(moto_url, "logs") as logs:
        await logs.create_log_group(logGroupName=LOG_GROUP)
    return EcsSettings(
        region=REGION,
        cluster=CLUSTER,
        endpoint_url=endpoint_url,
        subnets=[subnet["SubnetId"]],
        security_groups=[group["GroupId"]],
        execution_role_arn="arn:aws:iam::123456789012:role/exec",
        ebs_role_arn="arn:aws:iam::123456789012:role/ecs-infrastructure",
        log_group=LOG_GROUP,
        check_heartbeat=False,  # moto's task IPs are not reachable
        start_timeout=30,
        launch_budget=10,
        retry_base=0.01,
        retry_max=0.05,
    )


@dataclass
class CallLog:
    """Counts ECS calls per operation (every attempt, as the server would see it)
    and injects failures on the first ``fail_first`` calls of each operation."""

    counts: Counter[str] = field(default_factory=Counter)
    reached: Counter[str] = field(default_factory=Counter)
    fail_first: int = 0
    lose_first_run_task_answer: bool = False

    def before(self, model: Any, **_: Any) -> Any:
        operation = str(model.name)
        self.counts[operation] += 1
        number = self.counts[operation]
        if number <= self.fail_first:
            status, code = (400, "ThrottlingException") if number % 2 else (500, "InternalFailure")
            error = {"Code": code, "Message": f"injected failure {number}"}
            meta = {"HTTPStatusCode": status}
            return SimpleNamespace(status_code=status), {"Error": error, "ResponseMetadata": meta}
        self.reached[operation] += 1
        return None

    def after(self, model: Any, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        """The first RunTask that reached ECS gets a 500 back: it launched, the caller
        does not know it."""
        launched = http_response.status_code == 200  # not one of the injected failures
        if model.name == "RunTask" and self.lose_first_run_task_answer and launched:
            self.lose_first_run_task_answer = False
            http_response.status_code = 500
            parsed.clear()
            parsed.update(
                {
                    "Error": {"Code": "InternalFailure", "Message": "answer lost"},
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                }
            )

    def attach(self, runtime: EcsRuntime) -> None:
        def hook(service: str, client: Any) -> None:
            if service == "ecs":
                client.meta.events.register("before-call.ecs", self.before)
                client.meta.events.register("after-call.ecs", self.after)

        runtime.api.on_client(hook)


@dataclass
class EcsService:
    app: FastAPI
    http: httpx.AsyncClient
    runtime: EcsRuntime
    calls: CallLog
    settings: EcsSettings

    @property
    def reconciler(self) -> Reconciler:
        reconciler: Reconciler = self.app.state.reconciler
        return reconciler


def reconciler_settings(**changes: Any) -> ReconcilerSettings:
    values: dict[str, Any] = {
        "lease_seconds": 5,
        "resync_interval": 0.5,
        "observe_interval": 0.2,
        "backoff_base": 0.05,
        "backoff_max": 0.5,
        "concurrency": 64,
        "orphan_interval": 3600,
    }
    return ReconcilerSettings(**(values | changes))


@pytest.fixture
def calls() -> CallLog:
    return CallLog()


@pytest.fixture
def reconciler_config() -> ReconcilerSettings:
    return reconciler_settings()


@pytest.fixture
def service_overrides() -> dict[str, Any]:
    """Extra Settings values for the service (modules override this fixture)."""
    return {}


@pytest.fixture
async def ecs_service(
    database_url: str,
    tmp_path: Path,
    ecs_settings: EcsSettings,
    calls: CallLog,
    reconciler_config: ReconcilerSettings,
    service_overrides: dict[str, Any],
) -> AsyncIterator[EcsService]:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        runtime="ecs",
        ecs=ecs_settings,
        reconciler=reconciler_config,
        **service_overrides,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = getattr(app.state.ctx.runtime, "inner", app.state.ctx.runtime)  # unwrap
        assert isinstance(runtime, EcsRuntime)
        calls.attach(runtime)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        ) as http:
            yield EcsService(app, http, runtime, calls, ecs_settings)


async def cluster_tasks(moto_url: str, desired: str = "RUNNING") -> list[dict[str, Any]]:
    """The cluster's tasks (described, with tags) that ECS wants in ``desired``."""
    async with aws_client(moto_url, "ecs") as ecs:
        arns = (await ecs.list_tasks(cluster=CLUSTER, desiredStatus=desired))["taskArns"]
        tasks: list[dict[str, Any]] = []
        for start in range(0, len(arns), 100):
            answer = await ecs.describe_tasks(
                cluster=CLUSTER, tasks=arns[start : start + 100], include=["TAGS"]
            )
            tasks.extend(answer["tasks"])
        return tasks


def instance_of(task: dict[str, Any]) -> str | None:
    tags = {t["key"]: t["value"] for t in task.get("tags", [])}
    return tags.get("chroma-orch:instance")


async def task_of(moto_url: str, instance_id: str, not_arn: str | None = None) -> str:
    """The ARN of the instance's task in moto (other than ``not_arn``), once there is one."""

    async def probe() -> str | None:
        for task in await cluster_tasks(moto_url):
            if instance_of(task) == instance_id and task["taskArn"] != not_arn:
                return str(task["taskArn"])
        return None

    arn: str = await wait_for(probe)
    return arn


ECS_EVENTS = {"source": ["aws.ecs"], "detail-type": ["ECS Task State Change"]}


async def events_queue(moto_url: str, name: str = "chroma-orch-ecs-events") -> str:
    """The queue and rule of docs/ecs.md "Event-driven observation", in moto."""
    async with aws_client(moto_url, "ecs") as ecs:
        clusters = await ecs.describe_clusters(clusters=[CLUSTER])
        cluster_arn = clusters["clusters"][0]["clusterArn"]
    async with aws_client(moto_url, "sqs") as sqs:
        url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        queue_arn = attributes["Attributes"]["QueueArn"]
    pattern = ECS_EVENTS | {"detail": {"clusterArn": [cluster_arn]}}
    async with aws_client(moto_url, "events") as events:
        await events.put_rule(Name=name, EventPattern=json.dumps(pattern))
        await events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return str(url)


async def queue_drained(moto_url: str, url: str) -> bool:
    async with aws_client(moto_url, "sqs") as sqs:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        found = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
    return all(found["Attributes"][n] == "0" for n in names)

"""The ``kit`` fixture: every conformance test runs on the fake, sim, sim-remote, local and
ECS-on-moto runtimes. ECS uses moto's server as tests/ecs does (its fixtures are imported here)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from moto.backends import get_backend

from chroma_orch.runtimes.base import Runtime
from chroma_orch.runtimes.sim.cloud import forget
from tests.ecs.conftest import (
    CLUSTER,
    REGION,
    _aws_credentials,
    _aws_proxy,
    aws,
    ecs_settings,
    moto_url,
)
from tests.runtimes.conformance.kits import (
    EcsKit,
    FakeKit,
    Kit,
    LocalKit,
    RemoteSimKit,
    SimKit,
)
from tests.runtimes.sim_cloud import cloud_process
from tests.runtimes.test_local_runtime import kill_leftovers, servers_on

__all__ = [
    "_aws_credentials",
    "_aws_proxy",
    "aws",
    "ecs_settings",
    "moto_url",
]  # fixtures, used by name

ACCOUNT = "123456789012"


def _stop_in_moto(task_arn: str) -> None:
    """What ECS does when a task dies by itself (moto cannot make one fail)."""
    task = get_backend("ecs")[ACCOUNT][REGION].tasks[CLUSTER][task_arn]
    task.last_status = "STOPPED"
    task.desired_status = "STOPPED"
    task.stopped_reason = "Essential container in task exited"


@pytest.fixture(
    params=[
        "fake",
        "sim",  # in-process, with a compressed clock
        "sim-remote",  # the same cloud in a process of its own, over HTTP
        pytest.param("local", marks=pytest.mark.e2e),  # real Chroma servers
        pytest.param("ecs", marks=pytest.mark.e2e),  # moto's server
    ]
)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    if request.param == "fake":
        yield FakeKit(world_name=f"conformance-{uuid.uuid4().hex}")
    elif request.param == "sim":
        cluster = f"conformance-{uuid.uuid4().hex}"
        yield SimKit(cluster)
        forget(cluster)
    elif request.param == "sim-remote":
        with cloud_process() as cloud:
            yield RemoteSimKit(cloud)
    elif request.param == "local":
        yield LocalKit(tmp_path / "data")
        kill_leftovers(tmp_path)
        assert not servers_on(tmp_path)
    else:
        settings, aws = request.getfixturevalue("ecs_settings"), request.getfixturevalue("aws")
        yield EcsKit(settings, _stop_in_moto, aws)


@pytest.fixture
async def runtime(kit: Kit) -> AsyncIterator[Runtime]:
    """The kit's runtime; every server it leaves is stopped afterwards."""
    runtime = kit.make()
    try:
        yield runtime
    finally:
        for handle in (await runtime.discover()).values():
            await runtime.stop(handle)
        await runtime.aclose()

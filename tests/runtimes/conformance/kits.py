"""What the conformance suite needs of each runtime beyond the contract itself:
a new runtime object on the same servers (a restarted service), a spec, and ways
to make a server die by itself, write a line of output, be unreachable or slow to
start, to name a server that never ran, and to tell whether an instance's data is
still there; and where a runtime may differ (``notices_exits``, ``reaches_servers``)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from chroma_orch.runtimes.base import Handle, InstanceSpec, Runtime, data_directories
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.runtimes.ecs.tasks import TAG_INSTANCE, make_handle
from chroma_orch.runtimes.local import runtime as local_runtime
from chroma_orch.runtimes.local.launch import LockRecord
from chroma_orch.runtimes.local.runtime import LocalRuntime
from chroma_orch.runtimes.sim.cloud import cloud, forget
from chroma_orch.runtimes.sim.remote import RemoteCloud
from chroma_orch.runtimes.sim.runtime import SimRuntime
from chroma_orch.runtimes.sim.wire import ServerRef
from chroma_orch.settings import EcsSettings, LocalRuntimeSettings, SimRuntimeSettings
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.aws_lifecycle import TaskLifecycle
from tests.ecs.conftest import aws_client
from tests.fake_runtime import FakeRuntime, FakeRuntimeSettings, world
from tests.runtimes.sim_cloud import CloudProcess, cloud_process

SLOW_START_MIN = 3_600_000.0
"""The sim kits' slow start: an hour, in simulated seconds (at time scale 0.001)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spec(instance_id: str, generation: int = 1) -> InstanceSpec:
    return InstanceSpec(
        instance_id=instance_id,
        tenant_id="t1",
        name="db",
        generation=generation,
        port=free_port(),
        start_token=f"{uuid.UUID(instance_id).hex}-{generation}-0",  # as the reconciler's
    )


class Kit(Protocol):
    name: str
    notices_exits: bool
    """Whether the runtime calls ``on_exit`` callbacks (ECS learns of exits by polling)."""
    reaches_servers: bool
    """Whether ``heartbeat`` asks the servers themselves; a runtime that cannot reach
    them answers True (not checked): ECS on moto (its tasks' addresses lead nowhere,
    ``check_heartbeat`` is off)."""

    def make(self) -> Runtime:
        """A new runtime object on the same servers, as after a restart of the service."""

    async def crash(self, handle: Handle) -> None:
        """Make the server die by itself."""

    async def write_line(self, instance_id: str, handle: Handle, line: str) -> None:
        """Make the server write ``line`` to its output."""

    def unavailable(self, instance_id: str) -> contextlib.AbstractAsyncContextManager[Runtime]:
        """A runtime on which starting ``instance_id`` fails transiently."""

    def slow_start(self) -> contextlib.AbstractAsyncContextManager[Runtime]:
        """A runtime on the same platform whose servers take far longer to be ready
        than a test waits (the test stops them)."""

    def never_started(self, instance_id: str) -> Handle:
        """A handle as the runtime makes them, naming a server of ``instance_id`` that
        never ran (a handle saved for a start that never happened)."""

    async def has_data(self, instance_id: str) -> bool:
        """Whether the instance's data (what ``delete`` keeps with ``keep_data``) exists."""


@dataclass
class FakeKit:
    world_name: str
    name: str = "fake"
    notices_exits: bool = True
    reaches_servers: bool = True

    def make(self, ready_after: float = 0.05) -> Runtime:
        return FakeRuntime(FakeRuntimeSettings(world=self.world_name, ready_after=ready_after))

    async def crash(self, handle: Handle) -> None:
        world(self.world_name).crash(str(handle.data["instance_id"]))

    async def write_line(self, instance_id: str, handle: Handle, line: str) -> None:
        world(self.world_name).say(instance_id, line)

    @contextlib.asynccontextmanager
    async def unavailable(self, instance_id: str) -> AsyncIterator[Runtime]:
        runtime = self.make()
        world(self.world_name).outage = True
        try:
            yield runtime
        finally:
            world(self.world_name).outage = False
            await runtime.aclose()

    @contextlib.asynccontextmanager
    async def slow_start(self) -> AsyncIterator[Runtime]:
        runtime = self.make(ready_after=3600.0)
        try:
            yield runtime
        finally:
            await runtime.aclose()

    def never_started(self, instance_id: str) -> Handle:
        return Handle(1, {"instance_id": instance_id, "serial": 0, "port": free_port()})

    async def has_data(self, instance_id: str) -> bool:
        """The fake world's record of the instance's data."""
        return instance_id in world(self.world_name).data


@dataclass
class LocalKit:
    data_dir: Path
    name: str = "local"
    notices_exits: bool = True
    reaches_servers: bool = True

    def make(self) -> Runtime:
        return LocalRuntime(LocalRuntimeSettings(stop_grace=5.0), self.data_dir)

    async def crash(self, handle: Handle) -> None:
        os.kill(int(handle.data["pid"]), signal.SIGKILL)

    async def write_line(self, instance_id: str, handle: Handle, line: str) -> None:
        await asyncio.to_thread(_append, Path(handle.data["log"]), line)

    @contextlib.asynccontextmanager
    async def unavailable(self, instance_id: str) -> AsyncIterator[Runtime]:
        """The instance's data directory is locked by a process that is not a server
        (it never writes its record): start cannot tell whether to adopt or wait."""
        lock = self.data_dir / "instances" / f"{instance_id}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        runtime = self.make()
        with lock.open("a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            try:
                yield runtime
            finally:
                await runtime.aclose()
        lock.unlink()

    @contextlib.asynccontextmanager
    async def slow_start(self) -> AsyncIterator[Runtime]:
        """Servers run through a `chroma` command that waits an hour before it runs
        the real one: the process holds its data directory, nothing listens yet."""
        chroma = Path(sys.executable).with_name("chroma")
        slow = self.data_dir.parent / "slow-chroma"
        slow.write_text(f'#!/bin/sh\nsleep 3600\nexec {chroma} "$@"\n')
        slow.chmod(0o755)
        settings = LocalRuntimeSettings(
            stop_grace=5.0, launcher="chroma-cli", chroma_command=str(slow)
        )
        runtime = LocalRuntime(settings, self.data_dir)
        try:
            yield runtime
        finally:
            await runtime.aclose()

    def never_started(self, instance_id: str) -> Handle:
        """Its pid is this process's, its create_time not: the pid-reuse guard's case.
        Made by the runtime's own handle builder, so it has the handles' shape."""
        runtime = LocalRuntime(LocalRuntimeSettings(), self.data_dir)
        server = LockRecord(pid=os.getpid(), host="127.0.0.1", port=free_port())
        return local_runtime._make_handle(
            instance_id, runtime._paths(instance_id), server, 0.0, 0, generation=1
        )

    async def has_data(self, instance_id: str) -> bool:
        """Files in the instance's data directory (``DataDirectories.data_path``)."""
        directories = data_directories(self.make())
        assert directories is not None
        path = directories.data_path(instance_id)
        return path.is_dir() and any(path.iterdir())


def _append(log: Path, line: str) -> None:
    with log.open("a") as file:
        file.write(line + "\n")


@dataclass
class EcsKit:
    settings: EcsSettings
    stop_in_moto: Callable[[str], None]
    aws: AwsBehaviour
    name: str = "ecs"
    notices_exits: bool = False
    reaches_servers: bool = False

    def make(self) -> Runtime:
        return EcsRuntime(self.settings)

    async def crash(self, handle: Handle) -> None:
        self.stop_in_moto(str(handle.data["task_arn"]))

    async def write_line(self, instance_id: str, handle: Handle, line: str) -> None:
        task_id = str(handle.data["task_arn"]).split("/")[-1]
        stream = f"{self.settings.log_stream_prefix}/{self.settings.container_name}/{task_id}"
        assert self.settings.endpoint_url is not None
        async with aws_client(self.settings.endpoint_url, "logs") as logs:
            with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                await logs.create_log_stream(
                    logGroupName=self.settings.log_group, logStreamName=stream
                )
            event = {"timestamp": int(time.time() * 1000), "message": line}
            await logs.put_log_events(
                logGroupName=self.settings.log_group, logStreamName=stream, logEvents=[event]
            )

    @contextlib.asynccontextmanager
    async def unavailable(self, instance_id: str) -> AsyncIterator[Runtime]:
        """ECS does not answer (nothing listens where its endpoint is)."""
        settings = self.settings.model_copy(
            update={"endpoint_url": f"http://127.0.0.1:{free_port()}", "retry_attempts": 1}
        )
        runtime = EcsRuntime(settings)
        try:
            yield runtime
        finally:
            await runtime.aclose()

    @contextlib.asynccontextmanager
    async def slow_start(self) -> AsyncIterator[Runtime]:
        """Tasks held in PROVISIONING (the AWS-behaviour layer's ``lifecycle``), as a
        Fargate task is for its first seconds."""
        self.aws.lifecycle = TaskLifecycle()
        runtime = self.make()
        try:
            yield runtime
        finally:
            self.aws.lifecycle = None
            await runtime.aclose()

    def never_started(self, instance_id: str) -> Handle:
        """A task ECS never had, saved long ago (no ``launched_at``: not "not visible yet")."""
        cluster = self.settings.cluster
        arn = f"arn:aws:ecs:{self.settings.region}:123456789012:task/{cluster}/{uuid.uuid4().hex}"
        return make_handle(cluster, arn, instance_id, 1)

    async def has_data(self, instance_id: str) -> bool:
        """The instance's EBS volumes or snapshots (storage=ebs, the kit's default)."""
        assert self.settings.endpoint_url is not None
        filters = [{"Name": f"tag:{TAG_INSTANCE}", "Values": [instance_id]}]
        async with aws_client(self.settings.endpoint_url, "ec2") as ec2:
            volumes = (await ec2.describe_volumes(Filters=filters))["Volumes"]
            snapshots = await ec2.describe_snapshots(Filters=filters, OwnerIds=["self"])
        live = [v for v in volumes if v["State"] not in ("deleting", "deleted")]
        return bool(live or snapshots["Snapshots"])


def sim_never_started(instance_id: str) -> Handle:
    """A simulated server's handle with serial 0, which the cloud never issues."""
    return Handle(1, ServerRef(instance_id, 0, free_port()).to_json())


@dataclass
class SimKit:
    """The simulated cloud, its clock compressed 1000 times (a 40 s start takes 40 ms),
    no failures drawn: the suite makes servers die itself. It keeps nothing of an
    instance but its output (``CloudApi.delete``): that is the data ``keep_data`` keeps."""

    cluster: str
    name: str = "sim"
    notices_exits: bool = True
    reaches_servers: bool = True

    def settings(self, **changes: object) -> SimRuntimeSettings:
        return SimRuntimeSettings.model_validate(
            {
                "cluster": self.cluster,
                "time_scale": 0.001,
                "start_failure_rate": 0.0,
                "stop_after": 0.05,
                **changes,
            }
        )

    def make(self) -> Runtime:
        return SimRuntime(self.settings())

    async def crash(self, handle: Handle) -> None:
        cloud(self.settings()).crash(str(handle.data["instance_id"]))

    async def write_line(self, instance_id: str, handle: Handle, line: str) -> None:
        cloud(self.settings()).say(instance_id, line)

    @contextlib.asynccontextmanager
    async def unavailable(self, instance_id: str) -> AsyncIterator[Runtime]:
        runtime = self.make()
        cloud(self.settings()).outage = True
        try:
            yield runtime
        finally:
            cloud(self.settings()).outage = False
            await runtime.aclose()

    @contextlib.asynccontextmanager
    async def slow_start(self) -> AsyncIterator[Runtime]:
        """A cloud of its own whose starts take an hour (``start_min``)."""
        settings = self.settings(cluster=f"{self.cluster}-slow", start_min=SLOW_START_MIN)
        runtime = SimRuntime(settings)
        try:
            yield runtime
        finally:
            await runtime.aclose()
            forget(settings.cluster)

    def never_started(self, instance_id: str) -> Handle:
        return sim_never_started(instance_id)

    async def has_data(self, instance_id: str) -> bool:
        return bool(cloud(self.settings()).logs.get(instance_id))


@dataclass
class RemoteSimKit:
    """The simulated cloud in a process of its own (``cloud_server``, tests/runtimes/
    sim_cloud.py), reached over HTTP as replicas reach it."""

    cloud: CloudProcess
    name: str = "sim-remote"
    notices_exits: bool = True
    reaches_servers: bool = True

    @property
    def cloud_url(self) -> str:
        return self.cloud.url

    def make(self) -> Runtime:
        return SimRuntime(self.cloud.replica())

    async def crash(self, handle: Handle) -> None:
        remote = RemoteCloud(self.cloud_url)
        await remote.crash(str(handle.data["instance_id"]))
        await remote.aclose()

    async def write_line(self, instance_id: str, handle: Handle, line: str) -> None:
        remote = RemoteCloud(self.cloud_url)
        await remote.say(instance_id, line)
        await remote.aclose()

    @contextlib.asynccontextmanager
    async def unavailable(self, instance_id: str) -> AsyncIterator[Runtime]:
        """The cloud does not answer (nothing listens where its URL is)."""
        runtime = SimRuntime(SimRuntimeSettings(cloud_url=f"http://127.0.0.1:{free_port()}"))
        try:
            yield runtime
        finally:
            await runtime.aclose()

    @contextlib.asynccontextmanager
    async def slow_start(self) -> AsyncIterator[Runtime]:
        """A cloud process of its own whose starts take an hour (``start_min``)."""
        with cloud_process(CHROMA_ORCH_SIM__START_MIN=str(SLOW_START_MIN)) as slow:
            runtime = SimRuntime(slow.replica())
            try:
                yield runtime
            finally:
                await runtime.aclose()

    def never_started(self, instance_id: str) -> Handle:
        return sim_never_started(instance_id)

    async def has_data(self, instance_id: str) -> bool:
        """The instance's output, as on ``SimKit``."""
        remote = RemoteCloud(self.cloud_url)
        try:
            return bool(await remote.logs(instance_id))
        finally:
            await remote.aclose()

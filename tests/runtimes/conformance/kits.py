"""What the conformance suite needs of each runtime beyond the contract itself:
a new runtime object on the same servers (a restarted service), a spec, and ways
to make a server die by itself, write a line of output, or be unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from chroma_orch.runtimes.base import Handle, InstanceSpec, Runtime
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.runtimes.local.runtime import LocalRuntime
from chroma_orch.runtimes.sim.cloud import cloud
from chroma_orch.runtimes.sim.remote import RemoteCloud
from chroma_orch.runtimes.sim.runtime import SimRuntime
from chroma_orch.settings import EcsSettings, LocalRuntimeSettings, SimRuntimeSettings
from tests.ecs.conftest import aws_client
from tests.fake_runtime import FakeRuntime, FakeRuntimeSettings, world
from tests.runtimes.sim_cloud import CloudProcess


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

    def make(self) -> Runtime:
        """A new runtime object on the same servers, as after a restart of the service."""

    async def crash(self, handle: Handle) -> None:
        """Make the server die by itself."""

    async def write_line(self, instance_id: str, handle: Handle, line: str) -> None:
        """Make the server write ``line`` to its output."""

    def unavailable(self, instance_id: str) -> contextlib.AbstractAsyncContextManager[Runtime]:
        """A runtime on which starting ``instance_id`` fails transiently."""


@dataclass
class FakeKit:
    world_name: str
    name: str = "fake"
    notices_exits: bool = True

    def make(self) -> Runtime:
        return FakeRuntime(FakeRuntimeSettings(world=self.world_name, ready_after=0.05))

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


@dataclass
class LocalKit:
    data_dir: Path
    name: str = "local"
    notices_exits: bool = True

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


def _append(log: Path, line: str) -> None:
    with log.open("a") as file:
        file.write(line + "\n")


@dataclass
class EcsKit:
    settings: EcsSettings
    stop_in_moto: Callable[[str], None]
    name: str = "ecs"
    notices_exits: bool = False

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


@dataclass
class SimKit:
    """The simulated cloud, its clock compressed 1000 times (a 40 s start takes 40 ms),
    no failures drawn: the suite makes servers die itself."""

    cluster: str
    name: str = "sim"
    notices_exits: bool = True

    def settings(self) -> SimRuntimeSettings:
        return SimRuntimeSettings(
            cluster=self.cluster, time_scale=0.001, start_failure_rate=0.0, stop_after=0.05
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


@dataclass
class RemoteSimKit:
    """The simulated cloud in a process of its own (``cloud_server``, tests/runtimes/
    sim_cloud.py), reached over HTTP as replicas reach it."""

    cloud: CloudProcess
    name: str = "sim-remote"
    notices_exits: bool = True

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

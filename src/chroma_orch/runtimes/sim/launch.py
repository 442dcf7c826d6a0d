"""Starting one simulated server: its port and responder, and its timeline (ready,
then an exit by itself when its fate has one)."""

from __future__ import annotations

import asyncio
from itertools import islice

from chroma_orch.runtimes.base import InstanceSpec, RuntimeUnavailableError
from chroma_orch.runtimes.sim.cloud import Cloud, SimServer
from chroma_orch.runtimes.sim.model import Fate
from chroma_orch.runtimes.sim.responder import Listener

_BIND_TRIES = 1024
"""Ports tried per start (one bind each, some microseconds): another process may hold
a block of the range."""


async def launch(cloud: Cloud, spec: InstanceSpec, fate: Fate) -> SimServer:
    """A new server for ``spec``, bound (not yet answering) on a port of the range, or
    ``spec.port`` when it names one; its responder answers once its start latency
    has passed."""
    version = spec.server.chroma_version or cloud.settings.chroma_versions[0]
    listener, port = await _bind(cloud, version, spec.port)
    serial = next(cloud.serials)
    server = SimServer(spec.instance_id, serial, spec.generation, port, fate, spec.server, listener)
    loop = asyncio.get_running_loop()
    ready_in = cloud.scaled(fate.latency)
    server.timers.append(loop.call_later(ready_in, _answer, listener))
    if fate.exit_after is not None:
        exit_in = ready_in + cloud.scaled(fate.exit_after)
        server.timers.append(loop.call_later(exit_in, _exit_by_itself, cloud, server))
    cloud.servers[spec.instance_id] = server
    cloud.say(
        spec.instance_id,
        f"starting generation={spec.generation} port={port} version={version} "
        f"latency={fate.latency:.1f}s",
    )
    return server


async def _bind(cloud: Cloud, version: str, fixed: int | None) -> tuple[Listener, int]:
    tried = cloud.ports.candidates() if fixed is None else iter([fixed])
    candidates = islice(tried, _BIND_TRIES)
    refused: OSError | None = None
    for port in candidates:
        listener = Listener(version)
        try:
            await listener.open(cloud.settings.host, port)
        except OSError as error:
            refused = error
            cloud.ports.held_elsewhere(port)  # another process holds it
            continue
        cloud.ports.take(port)
        return listener, port
    raise RuntimeUnavailableError(
        f"no free port for a simulated server in {cloud.ports.low}-{cloud.ports.high}"
        f" (last refusal: {refused})"
    )


def _answer(listener: Listener) -> None:
    if listener.server is not None:
        asyncio.ensure_future(listener.server.start_serving())


def _exit_by_itself(cloud: Cloud, server: SimServer) -> None:
    cloud.fail(server, server.fate.exit_cause)

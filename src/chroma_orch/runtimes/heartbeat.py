"""Chroma's heartbeat, asked of a server at its address: how every runtime checks
that a server answers (readiness while it starts, liveness once it runs)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from chroma_orch.runtimes.base import Endpoint
from chroma_orch.runtimes.local.launch import http_status

HEARTBEAT_PATH = "/api/v2/heartbeat"
_CONCURRENCY = 64


async def answers(endpoint: Endpoint, timeout: float) -> bool:
    """Whether the server at ``endpoint`` answers its heartbeat (200) within ``timeout``."""
    return await http_status(endpoint.host, endpoint.port, HEARTBEAT_PATH, timeout) == 200


async def heartbeats(servers: Mapping[str, Endpoint], timeout: float) -> dict[str, bool]:
    """``answers`` for many servers at once (at most 64 probes in flight), keyed as
    ``servers`` is."""
    probes = asyncio.Semaphore(_CONCURRENCY)

    async def probe(endpoint: Endpoint) -> bool:
        async with probes:
            return await answers(endpoint, timeout)

    results = await asyncio.gather(*(probe(endpoint) for endpoint in servers.values()))
    return dict(zip(servers, results, strict=True))

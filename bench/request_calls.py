"""Python function calls per API request: a measure of a request's CPU that does not
move with the machine.

    python bench/request_calls.py [--cycles 200]

CPU time per request moved up to threefold between runs of the same code minutes
apart on these (virtual) machines, idle, with no hardware counters to count
instructions instead; calls counted by ``cProfile`` do not move. They weigh every
Python call alike (a call into C, a socket write, counts as one), so they rank
changes of the Python path (the framework, the ORM, the domain), not of I/O.

Ours: the app (``create_app``, local runtime, reconciler off, embedded
PostgreSQL) called in-process through ASGI, no server or socket in between: cycles
of launch, status, stop and delete by one tenant, one request at a time, after
100 unmeasured cycles. Floor: ``/healthz`` through the same app (middleware, routing,
FastAPI; no dependency, no database). Prints JSON: calls per request of each, per
operation, and ours ÷ floor. The calls of every task of the process count
(listener, hub), as they are part of what a request costs.

2026-12-03: launch/status/stop/delete 2,416 calls per request before one
unit-of-work dependency, 2,250 after it, 1,976 once a pending snapshot (a local
delete takes one) was one statement (docs/scale.md, "Where a request's CPU goes").
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import fresh_database, postgres, workdir  # noqa: E402
from chroma_orch.app import create_app  # noqa: E402
from chroma_orch.settings import ReconcilerSettings  # noqa: E402
from tests.conftest import ADMIN_TOKEN, make_settings  # noqa: E402

App = Callable[..., Awaitable[None]]


async def call(app: App, method: str, path: str, token: str, body: object = None) -> Any:
    """One request through ``app`` as uvicorn would pass it; its JSON answer."""
    raw = json.dumps(body).encode() if body is not None else b""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    received = False
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            await asyncio.Event().wait()  # no disconnect while the request runs
        received = True
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    answer = b"".join(chunks)
    if status >= 400:
        raise RuntimeError(f"{method} {path}: {status} {answer[:300]!r}")
    return json.loads(answer) if answer else None


async def cycle(app: App, token: str, name: str) -> None:
    created = await call(app, "POST", "/v1/instances", token, {"name": name})
    instance = f"/v1/instances/{created['instance']['id']}"
    await call(app, "GET", instance, token)
    await call(app, "POST", f"{instance}/stop", token)
    await call(app, "DELETE", instance, token)


async def counted(work: Callable[[], Awaitable[None]]) -> int:
    """Python function calls (each resumption of a coroutine counts) while ``work`` runs."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        await work()
    finally:
        profile.disable()
    stats = pstats.Stats(profile)
    return int(stats.total_calls)  # type: ignore[attr-defined]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with workdir() as base, postgres(base) as admin_url:
        database = await fresh_database(admin_url)
        settings = make_settings(
            database,
            base / "data",
            reconciler=ReconcilerSettings(enabled=False),
            migrate_on_start=True,
        )
        app = create_app(settings, retention_loop=False)
        async with app.router.lifespan_context(app):
            tenant = await call(app, "POST", "/v1/tenants", ADMIN_TOKEN, {"name": "bench"})
            tokens = f"/v1/tenants/{tenant['id']}/tokens"
            token = (await call(app, "POST", tokens, ADMIN_TOKEN, {"name": "bench"}))["token"]
            for number in range(100):
                await cycle(app, token, f"warm-{number}")

            async def cycles() -> None:
                for number in range(args.cycles):
                    await cycle(app, token, f"n-{number}")

            async def healthz() -> None:
                for _ in range(4 * args.cycles):
                    await call(app, "GET", "/healthz", token)

            ours = await counted(cycles) / (4 * args.cycles)
            floor = await counted(healthz) / (4 * args.cycles)
    return {
        "benchmark": "request_calls",
        "cycles": args.cycles,
        "calls_per_request": round(ours),
        "floor_calls_per_request": round(floor),
        "calls_vs_floor": round(ours / floor, 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=200)
    print(json.dumps(uvloop.run(main(parser.parse_args())), indent=2))

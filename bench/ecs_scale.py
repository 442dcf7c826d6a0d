"""N ECS instances launched, observed and stopped through the AWS-behaviour layer
(tests/ecs/aws_behaviour.py: AWS's request throttling, eventual consistency and
clientToken idempotency) in front of moto. Prints JSON.

    python bench/ecs_scale.py [--instances 2000] [--steady 60] [--events]

- ``run_task_calls_per_instance``: RunTask calls the layer received / N (goal 1.0:
  every throttled or repeated call shows here); ``launches_per_instance`` counts the
  tasks it launched (must be 1.0).
- ``describe_tasks_per_minute_steady``: DescribeTasks calls per minute while all N
  run and nothing changes (goal: only the safety sweep). Observation polls today,
  ``ceil(N / 100)`` calls per liveness pass; ``--events`` turns the ECS events queue
  on where the runtime has that setting (it fails saying so where it does not).
- ``throttled``: calls the layer answered ``ThrottlingException`` (AWS's rates).
- ``ratio_to_floor``: seconds from the first launch request to all running, divided
  by the floor AWS's Fargate launch rate sets in the same run: N / 20 per second.

The service runs in this process (its app through ASGI, the real PostgreSQL, the
product's reconciler settings), moto and the layer in threads of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import fresh_database, postgres, workdir  # noqa: E402
from chroma_orch.app import create_app  # noqa: E402
from chroma_orch.db.listener import asyncpg_dsn  # noqa: E402
from chroma_orch.settings import EcsSettings, ReconcilerSettings  # noqa: E402
from tests.conftest import ADMIN_TOKEN, make_settings  # noqa: E402
from tests.ecs.aws_behaviour import AwsBehaviourProxy  # noqa: E402
from tests.ecs.conftest import aws_account as ecs_account  # noqa: E402
from tests.ecs.conftest import events_queue  # noqa: E402
from tests.helpers import bearer, create_tenant  # noqa: E402

FARGATE_LAUNCHES_PER_SECOND = 20.0
"""Sustained rate of Fargate's task-launch bucket ("AWS Fargate throttling quotas")."""
PER_TENANT = 100  # the default max_instances_per_tenant


async def aws_account(moto_url: str, proxy_url: str, events: bool) -> EcsSettings:
    """The ECS tests' account in moto (tests/ecs/conftest.py), reached through the
    layer; with ``events``, the EventBridge rule and SQS queue of docs/ecs.md
    "Event-driven observation". Storage is ephemeral: the bench measures the control
    plane's ECS calls, and EBS volumes in moto would measure moto."""
    settings = await ecs_account(moto_url, proxy_url)
    values: dict[str, Any] = {"storage": "ephemeral"}
    if events:
        values["events_queue_url"] = await events_queue(moto_url)
    return settings.model_copy(update=values)


async def _count(database_url: str, phase: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM instances WHERE phase = $1", phase)
        )
    finally:
        await connection.close()


async def _until(database_url: str, phase: str, n: int, timeout: float) -> float:
    started = time.monotonic()
    while await _count(database_url, phase) < n:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{await _count(database_url, phase)} of {n} {phase}")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def _gathered(calls: list[Any], at_once: int = 32) -> list[Any]:
    gate = asyncio.Semaphore(at_once)

    async def one(call: Any) -> Any:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def launch_all(http: httpx.AsyncClient, n: int) -> list[str]:
    tenants = [await create_tenant(http, f"t{k}") for k in range(math.ceil(n / PER_TENANT))]
    answers = await _gathered(
        [
            http.post(
                "/v1/instances", json={"name": f"i{k}"}, headers=bearer(tenants[k // PER_TENANT][1])
            )  # fmt: skip
            for k in range(n)
        ]
    )
    return [str(a.json()["instance"]["id"]) for a in answers]


async def run(n: int, steady: float, events: bool) -> dict[str, Any]:
    # moto's account: never the caller's real credentials or profile
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    os.environ.pop("AWS_PROFILE", None)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    proxy = AwsBehaviourProxy(moto_url)
    proxy.start()
    aws = proxy.behaviour
    try:
        with workdir() as base, postgres(base) as admin_url:
            database_url = await fresh_database(admin_url)
            ecs = await aws_account(moto_url, proxy.url, events)
            settings = make_settings(database_url, base / "data", runtime="ecs", ecs=ecs,
                                     reconciler=ReconcilerSettings())  # fmt: skip
            result = await _measure(settings, database_url, aws, n, steady)
            return result | {"observation": "events" if events else "polling"}
    finally:
        proxy.stop()
        moto.stop()


async def _measure(
    settings: Any, database_url: str, aws: Any, n: int, steady: float
) -> dict[str, Any]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     headers=headers, timeout=120) as http:  # fmt: skip
            started = time.monotonic()
            ids = await launch_all(http, n)
            to_running = time.monotonic() - started + await _until(database_url, "running", n, 3600)
            launch_calls = dict(aws.seen)
            before = aws.seen["DescribeTasks"]
            await asyncio.sleep(steady)
            described = aws.seen["DescribeTasks"] - before
            stop_started = time.monotonic()
            await _gathered([http.post(f"/v1/instances/{i}/stop") for i in ids])
            to_stopped = (
                time.monotonic() - stop_started + await _until(database_url, "stopped", n, 3600)
            )
    floor = n / FARGATE_LAUNCHES_PER_SECOND
    return {
        "benchmark": "ecs_scale",
        "instances": n,
        "cpus": os.cpu_count(),
        "run_task_calls_per_instance": round(launch_calls.get("RunTask", 0) / n, 3),
        "launches_per_instance": round(aws.launched / n, 3),
        "describe_tasks_per_minute_steady": round(described * 60 / steady, 1),
        "steady_seconds": steady,
        "throttled": dict(aws.throttled),
        "seconds_to_all_running": round(to_running, 1),
        "floor_seconds": round(floor, 1),
        "ratio_to_floor": round(to_running / floor, 2),
        "seconds_to_all_stopped": round(to_stopped, 1),
        "calls_by_operation": dict(aws.seen),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady state")
    parser.add_argument("--events", action="store_true", help="observe through the events queue")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.instances, args.steady, args.events)), indent=2))

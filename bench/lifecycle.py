"""Launch-to-running through the API vs. bare starts of the same server command
and of `chroma run`, all in one run on one machine. Prints JSON.

    python bench/lifecycle.py [--count 10] [--rounds 8]

ours:              POST /v1/instances sent  ->  GET /v1/instances/{id}/wait says running
bare_same_command: the launcher argv our runtime uses, spawned directly  ->  heartbeat 200
bare_chroma_run:   `chroma run --path ... --port ...`                    ->  heartbeat 200

Each round starts ``count`` at once, after one round of ours that is not counted (it
fills connection pools and statement caches); medians are over every start of every
round (``round_medians`` shows each round's, to judge the run-to-run noise).
Targets: ours / bare_same_command <= 1.3 and ours below bare_chroma_run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    default_reconciler_timing,
    fresh_database,
    postgres,
    summary,
    workdir,
)  # noqa: E402
from chroma_orch.runtimes.local.launch import http_status, server_command  # noqa: E402
from chroma_orch.settings import LocalRuntimeSettings  # noqa: E402
from tests.e2e.service import Service, free_port, kill_chroma_processes  # noqa: E402
from tests.helpers import create_tenant  # noqa: E402

POLL = float(os.environ.get("BENCH_POLL", "0.01"))


async def _heartbeat_after(port: int, started: float) -> float:
    """Seconds from ``started`` until the heartbeat answers 200, probed every POLL
    seconds with the same bare probe the service uses (an HTTP client would burn
    CPU the booting servers need, and slow the baseline down)."""
    while await http_status("127.0.0.1", port, "/api/v2/heartbeat", 0.5) != 200:  # noqa: ASYNC110
        await asyncio.sleep(POLL)
    return time.monotonic() - started


async def bare_starts(argvs: list[list[str]], ports: list[int], workdir: Path) -> list[float]:
    """Spawn every argv at once; seconds from spawn to first heartbeat, per server."""
    env = {**os.environ, "RUST_LOG": "warn", "ANONYMIZED_TELEMETRY": "False"}
    log = (workdir / "bare.log").open("ab")  # noqa: ASYNC230 (before the clock starts)
    started = time.monotonic()
    procs = [
        await asyncio.create_subprocess_exec(
            *argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir
        )
        for argv in argvs
    ]
    try:
        return list(await asyncio.gather(*(_heartbeat_after(p, started) for p in ports)))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await proc.wait()
        log.close()


async def bare_round(kind: str, count: int, workdir: Path) -> list[float]:
    settings = LocalRuntimeSettings()
    ports = [free_port() for _ in range(count)]
    argvs = []
    for port in ports:
        path = workdir / f"{kind}-{uuid.uuid4().hex[:8]}"
        if kind == "same":
            argvs.append(
                server_command(settings, path, path.with_suffix(".lock"), "127.0.0.1", port)
            )
        else:
            chroma = str(Path(sys.executable).with_name("chroma"))
            argvs.append(
                [chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
            )
    return await bare_starts(argvs, ports, workdir)


async def _until_running(http: aiohttp.ClientSession, name: str, started: float) -> float:
    async with http.post("/v1/instances", json={"name": name}) as created:
        instance_id = (await created.json())["instance"]["id"]
    while True:  # the long poll answers when the reconciler records "running"
        async with http.get(f"/v1/instances/{instance_id}/wait", params={"timeout": 30}) as got:
            body = await got.json()
        if body["phase"] == "running" and body["observed_generation"] == body["generation"]:
            return time.monotonic() - started
        if body["phase"] == "failed":
            raise RuntimeError(f"instance failed: {body['failure']}")


async def ours_round(service: Service, token: str, count: int, round_no: int) -> list[float]:
    """``count`` launches at once through the API (aiohttp: a light client, as the
    bare rounds' probe is), then every instance deleted and gone before the next
    round, so that servers stopping do not slow the next round's baseline."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(service.url, headers=headers) as http:
        started = time.monotonic()
        times = await asyncio.gather(
            *(_until_running(http, f"r{round_no}-i{n}", started) for n in range(count))
        )
        async with http.get("/v1/instances", params={"limit": 200}) as listed:
            items = (await listed.json())["items"]
        for item in items:
            async with http.delete(f"/v1/instances/{item['id']}") as deleted:
                deleted.raise_for_status()
        for item in items:  # a deleted instance is a 404
            while True:
                async with http.get(f"/v1/instances/{item['id']}") as got:
                    if got.status == 404:
                        break
                await asyncio.sleep(0.05)
    return list(times)


async def main(count: int, rounds: int) -> dict[str, object]:
    results: dict[str, list[float]] = {"ours": [], "bare_same_command": [], "bare_chroma_run": []}
    per_round: dict[str, list[float]] = {name: [] for name in results}
    with workdir() as base, postgres(base) as admin_url:
        service = Service(
            await fresh_database(admin_url), base / "data", **default_reconciler_timing()
        )
        await service.start()
        try:
            async with service.client() as admin:
                _, token = await create_tenant(admin, "bench")
            # not counted: the first launches fill connection pools and statement caches
            await ours_round(service, token, count, rounds)
            for round_no in range(rounds):
                measured = {
                    "bare_same_command": await bare_round("same", count, base),
                    "bare_chroma_run": await bare_round("cli", count, base),
                    "ours": await ours_round(service, token, count, round_no),
                }
                for name, samples in measured.items():
                    results[name] += samples
                    per_round[name].append(summary(samples)["p50"])
        finally:
            await service.stop()
            kill_chroma_processes(base / "data")
    stats = {name: summary(samples) for name, samples in results.items()}
    ours, same, cli = (stats[k]["p50"] for k in ("ours", "bare_same_command", "bare_chroma_run"))
    return {
        "benchmark": "lifecycle",
        "instances_at_once": count,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "seconds": stats,
        "round_medians": per_round,
        "ratio_ours_to_bare_same_command": round(ours / same, 3),
        "ratio_ours_to_bare_chroma_run": round(ours / cli, 3),
        "target_ratio_met": ours / same <= 1.3,
        "ours_below_chroma_run": ours < cli,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.count, args.rounds)), indent=2))

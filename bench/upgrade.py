"""A fleet upgrade on the local runtime: ``instances`` instances holding data, one
``POST /v1/upgrades`` in three waves to another Chroma version, while a client per
instance queries it through the data plane; each figure beside a floor measured in
the same run. Prints JSON.

    python bench/upgrade.py [--instances 20] [--vectors 3000] [--dim 64]
        [--from 1.5.9] [--to 1.5.8] [--waves 10,40,100] [--max-concurrent 2]
        [--poll 0.03] [--second-python .venvs/chroma-1.5.8/bin/python]

The service's local runtime knows the installed chromadb and ``--second-python``'s
(``make chroma-venvs``) as ``tests.chroma_versions.SECOND_VERSION``; ``--from`` and
``--to`` name the direction (an instance is created on ``--from``: the installed
version needs no spec, another one is asked for with ``spec.chroma_version``).

ours                                        floor
rollout: POST /v1/upgrades -> succeeded     (none: the sum of the floors below, for scale)
downtime of an instance: the longest gap    the same instance's data copied (cp -a) before
  between two successful answers of a         the rollout; a bare ``--from`` server started
  client querying it (a nearest-neighbour     on the copy, queried by the same client;
  query every ``poll`` s, through             SIGTERM, wait for its exit, start a bare
  ``/i/{id}/`` with the tenant's token)       ``--to`` server on the copy (same port, the
  during its upgrade                          launcher argv our runtime uses): the same
                                              longest gap (stop + start by hand)

The floors run one instance at a time (``--floor-group``: how many are stopped and
started at once), one pass over every instance before the rollout and one after it
(interleaved with ours, the instances' clients querying all along in both, so both
see the same load); an instance's floor is the median of its two. The rollout
upgrades up to ``max_concurrent`` at once, so its servers compete with each other
where the floor's do not: the floor is the stricter one. Ratios are ours / floor (of
the p50s, the p99s and, per instance, the median of ours / its own floor). Ours
includes the guarded upgrade's work (the parity probe's baseline, the
``pre_upgrade`` snapshot's copy of the data, the probe of the new server); requests
meeting the pause are held by the built-in proxy (docs/dataplane.md) and answered
late, not failed; the failures a client saw are counted with their answers.

Afterwards every instance's count and the nearest neighbours of a fixed query must be
what they were before, and its server must run ``--to``'s bindings.
Goal (issue 16): per-instance unavailability under 2 s p99 on the local runtime.

Benchmark (2026-12-01, 2 cores shared with other helpers' test runs, load average
2.2-6.3 over the run; 1.5.9 -> 1.5.8, 20 instances x 3,000 vectors of dimension 64,
waves 10,40,100 (2, 6, 12 instances), max_concurrent 2, a query every 30 ms per
instance, the client's steady gap between answers 63 ms p50 / 125 ms p99):

    rollout: succeeded in 63.7 s; 20 upgrades succeeded, 0 rollbacks
    downtime per instance   ours p50 0.57 s, p99 0.82 s, max 0.82 s
                            floor p50 0.35 s, p99 0.59 s (bare stop + start)
    ratio ours / floor      p50 1.64, p99 1.41, per-instance median 1.37
    goal p99 < 2 s          met (0.82 s)
    client failures         2 queries answered 502 upstream_failed in 20 upgrades
                            (under way in the old server when it stopped), none slower
                            than 1 s
    phases (from creation)  old server stopped and spec switched at 0.51 s p50;
                            completed at 6.4 s p50 (the snapshot ready, the probe)
    data                    20 of 20 counts and nearest neighbours unchanged, 20 of
                            20 servers on 1.5.8's bindings

The other way (1.5.8 -> 1.5.9: instances created with ``spec.chroma_version``, run
against main's service at da9dec9+, load average 0.9-6.4): rollout succeeded in
68.2 s, 0 rollbacks; downtime ours p50 0.46 s / p99 0.76 s, floor 0.49 s / 0.80 s
(ratio 0.96 / 0.96); 2 queries answered 502 upstream_failed; data 20 of 20 unchanged.
Run to run, on this shared machine, the floor's p50 moved between 0.35 and 0.61 s and
the ratio between 0.9 and 1.6: read ratios as "about the floor", not to two digits.

An earlier run with the floors two at a time (as many as the rollout upgrades at
once), load average up to 8.3: ours p50 0.55 s / p99 0.73 s, floor 0.61 s / 1.05 s.
The upgrade's wall time (about 6.4 s each) is mostly after the new server answers;
what a client waits for is the stop, the data copy and the start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    default_reconciler_timing,
    fresh_database,
    postgres,
    summary,
    workdir,
)
from chroma_orch.runtimes.local.launch import http_status, server_command  # noqa: E402
from chroma_orch.runtimes.local.specs import LocalVersions  # noqa: E402
from chroma_orch.settings import LocalRuntimeSettings  # noqa: E402
from tests.chroma_versions import SECOND_PYTHON, SECOND_VERSION  # noqa: E402
from tests.e2e.service import Service, free_port, kill_chroma_processes  # noqa: E402
from tests.e2e.upgrade_helpers import served_version  # noqa: E402
from tests.helpers import create_tenant  # noqa: E402

COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections"
INSTANCES_PER_TENANT = 5
SLOW = 1.0
"""An answer slower than this (seconds) counts as slow."""
OVER = ("succeeded", "halted", "cancelled")


@dataclass
class Target:
    """One Chroma server as a client sees it: where, with which token, its collection."""

    base: str
    headers: dict[str, str]
    collection: str = ""
    query: list[float] = field(default_factory=list)

    def url(self, tail: str = "") -> str:
        return f"{self.base}{COLLECTIONS}{tail}"


class Querier:
    """A nearest-neighbour query at a time, ``poll`` s apart; when each one succeeded."""

    def __init__(self, http: aiohttp.ClientSession, target: Target, poll: float) -> None:
        self.http, self.target, self.poll = http, target, poll
        self.oks: list[float] = []  # wall clock (compared with the service's timestamps)
        self.failed: list[float] = []
        self.errors: list[tuple[float, str]] = []
        self.slow: list[float] = []
        self.last_error = ""
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def run(self) -> None:
        body = {"query_embeddings": [self.target.query], "n_results": 5, "include": []}
        url = self.target.url(f"/{self.target.collection}/query")
        while not self.http.closed:
            sent = time.time()
            try:
                async with self.http.post(url, json=body, headers=self.target.headers) as got:
                    answer = await got.read()
                    ok = got.status == 200
                    self.last_error = "" if ok else f"{got.status} {answer[:200]!r}"
            except aiohttp.ClientError as exc:
                ok, self.last_error = False, repr(exc)
            now = time.time()
            (self.oks if ok else self.failed).append(now)
            if not ok:
                self.errors.append((now, self.last_error[:120]))
            if now - sent > SLOW:
                self.slow.append(now)
            await asyncio.sleep(self.poll)

    def longest_gap(self, since: float, until: float) -> float:
        """The longest time without a successful answer around [since, until]: from the
        last success before ``since`` to the first one after ``until``."""
        before = [t for t in self.oks if t <= since][-1:]
        after = [t for t in self.oks if t >= until][:1]
        oks = before + [t for t in self.oks if since < t < until] + after
        return max((b - a for a, b in zip(oks, oks[1:], strict=False)), default=until - since)

    async def first_ok_after(self, since: float, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while not (self.oks and self.oks[-1] > since):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no answer from {self.target.base} in {timeout} s: {self.last_error}"
                )
            await asyncio.sleep(0.01)
        return self.oks[-1]


@dataclass
class Member:
    """One instance of the fleet: its id, client view, data before, floor copy."""

    instance_id: str
    target: Target
    before: Any = None
    copy: Path | None = None
    floors: list[float] = field(default_factory=list)
    querier: Querier | None = None


# ---------------------------------------------------------------- the fleet and its data


async def _expect(got: aiohttp.ClientResponse, *status: int) -> Any:
    body = await got.json(content_type=None)
    if got.status not in (status or (200,)):
        raise RuntimeError(f"{got.method} {got.url}: {got.status} {body}")
    return body


async def create_fleet(
    http: aiohttp.ClientSession, service: Service, args: argparse.Namespace
) -> list[Member]:
    """``instances`` running instances, ``INSTANCES_PER_TENANT`` per tenant."""
    tokens: list[str] = []
    async with service.client() as admin:
        for n in range(0, args.instances, INSTANCES_PER_TENANT):
            tokens.append((await create_tenant(admin, f"t{n}"))[1])
    spec = (
        {}
        if args.from_version == args.installed
        else {"spec": {"chroma_version": args.from_version}}
    )
    members = []
    for n in range(args.instances):
        headers = {"Authorization": f"Bearer {tokens[n // INSTANCES_PER_TENANT]}"}
        async with http.post(
            f"{service.url}/v1/instances", json={"name": f"db{n}", **spec}, headers=headers
        ) as got:
            instance_id = (await _expect(got, 201, 202))["instance"]["id"]
        members.append(Member(instance_id, Target(f"{service.url}/i/{instance_id}", headers)))
    for member in members:
        await _running(http, service.url, member)
    return members


async def _running(http: aiohttp.ClientSession, url: str, member: Member) -> None:
    while True:
        async with http.get(
            f"{url}/v1/instances/{member.instance_id}/wait",
            params={"phase": "running", "timeout": 30},
            headers=member.target.headers,
        ) as got:
            body = await _expect(got)
        if body["phase"] == "running":
            return
        if body["phase"] == "failed":
            raise RuntimeError(f"instance failed: {body['failure']}")


async def fill(
    http: aiohttp.ClientSession, target: Target, n: int, args: argparse.Namespace
) -> Any:
    """``vectors`` random vectors through the data plane in batches; returns (count,
    nearest ids of the query) as read back."""
    rng = np.random.default_rng(n)
    async with http.post(
        target.url(), json={"name": "bench", "get_or_create": True}, headers=target.headers
    ) as got:
        target.collection = (await _expect(got))["id"]
    for start in range(0, args.vectors, args.batch):
        count = min(args.batch, args.vectors - start)
        body = {
            "ids": [f"v{start + i}" for i in range(count)],
            "embeddings": rng.random((count, args.dim), dtype=np.float32).tolist(),
        }
        async with http.post(
            target.url(f"/{target.collection}/add"), json=body, headers=target.headers
        ) as got:
            await _expect(got, 200, 201)
    target.query = rng.random(args.dim, dtype=np.float32).tolist()
    return await read_back(http, target)


async def read_back(http: aiohttp.ClientSession, target: Target) -> Any:
    async with http.get(target.url(f"/{target.collection}/count"), headers=target.headers) as got:
        count = await _expect(got)
    body = {"query_embeddings": [target.query], "n_results": 5, "include": ["distances"]}
    async with http.post(
        target.url(f"/{target.collection}/query"), json=body, headers=target.headers
    ) as got:
        ids = (await _expect(got))["ids"][0]
    return [count, ids]


# ---------------------------------------------------------------- the floor


class BareServer:
    """A bare server of one version on a directory, started with our launcher's argv."""

    def __init__(self, launch: Any, path: Path, port: int, log: Path) -> None:
        lock = path.with_suffix(".lock")
        self.argv = server_command(
            LocalRuntimeSettings(), path, lock, "127.0.0.1", port, launch=launch
        )
        self.port, self.log, self.cwd = port, log, path.parent
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "RUST_LOG": "warn", "ANONYMIZED_TELEMETRY": "False"}
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd
            )

    async def ready(self) -> None:
        while await http_status("127.0.0.1", self.port, "/api/v2/heartbeat", 0.5) != 200:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        await self.proc.wait()


async def floor_group(
    http: aiohttp.ClientSession,
    group: list[Member],
    versions: LocalVersions,
    args: argparse.Namespace,
) -> None:
    """Stop + start by hand, on copies of the group's data, all at once: the longest
    gap between the same client's successful answers, per member."""
    old_new, queriers = [], []
    for member in group:
        assert member.copy is not None
        port = free_port()
        target = Target(
            f"http://127.0.0.1:{port}", {}, member.target.collection, member.target.query
        )
        log = member.copy.parent / "bare.log"
        old = BareServer(versions.launchers[args.from_version], member.copy, port, log)
        new = BareServer(versions.launchers[args.to_version], member.copy, port, log)
        await old.start()
        old_new.append((old, new))
        queriers.append(Querier(http, target, args.poll))
    await asyncio.gather(*(old.ready() for old, _ in old_new))
    for querier in queriers:
        querier.start()
    await asyncio.sleep(1.0)  # steady querying before the stop
    stopped = time.time()

    async def swap(old: BareServer, new: BareServer, querier: Querier) -> float:
        await old.stop()
        await new.start()
        return await querier.first_ok_after(time.time())

    try:
        answered = await asyncio.gather(
            *(swap(o, n, q) for (o, n), q in zip(old_new, queriers, strict=True))
        )
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; see the end of {log}") from exc
    for member, querier, until in zip(group, queriers, answered, strict=True):
        member.floors.append(querier.longest_gap(stopped, until))
        await querier.stop()
    for _, new in old_new:
        await new.stop()


async def floor_pass(
    http: aiohttp.ClientSession,
    members: list[Member],
    versions: LocalVersions,
    args: argparse.Namespace,
) -> None:
    for start in range(0, len(members), args.floor_group):
        await floor_group(http, members[start : start + args.floor_group], versions, args)


def copy_data(service: Service, member: Member, scratch: Path) -> None:
    """The instance's data as it is now (idle: written, read back), for its floor."""
    source = service.data_dir / "instances" / member.instance_id
    member.copy = scratch / member.instance_id / "data"
    member.copy.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(source), str(member.copy)], check=True)


# ---------------------------------------------------------------- ours


async def rollout(
    http: aiohttp.ClientSession, service: Service, args: argparse.Namespace
) -> dict[str, Any]:
    """POST /v1/upgrades and wait until it is over; the rollout, with ``seconds``."""
    admin = {"Authorization": f"Bearer {service.env['CHROMA_ORCH_ADMIN_TOKEN']}"}
    request = {
        "chroma_version": args.to_version,
        "waves": args.waves,
        "max_concurrent": args.max_concurrent,
    }
    started = time.monotonic()
    async with http.post(f"{service.url}/v1/upgrades", json=request, headers=admin) as got:
        body = await _expect(got, 202)
    while body["state"] not in OVER:
        await asyncio.sleep(0.2)
        async with http.get(f"{service.url}/v1/rollouts/{body['id']}", headers=admin) as got:
            body = await _expect(got)
    body["seconds"] = round(time.monotonic() - started, 2)
    return dict(body)


async def upgrade_of(
    http: aiohttp.ClientSession, service: Service, member: Member
) -> dict[str, Any]:
    url = f"{service.url}/v1/instances/{member.instance_id}/upgrades"
    async with http.get(url, headers=member.target.headers) as got:
        body = await _expect(got)
    items = body["items"] if isinstance(body, dict) else body
    assert len(items) == 1, items
    return dict(items[0])


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def phase_times(upgrades: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds from the upgrade's creation to each of its recorded moments."""
    out = {}
    for moment in ("started_at", "switched_at", "completed_at"):
        out[f"created_to_{moment}"] = summary(
            [_at(u[moment]) - _at(u["created_at"]) for u in upgrades if u[moment]], digits=3
        )
    return out


def downtimes(members: list[Member], upgrades: list[dict[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"gap": [], "failed": [], "slow": [], "errors": []}
    for member, upgrade in zip(members, upgrades, strict=True):
        q = member.querier
        assert q is not None
        assert upgrade["completed_at"], upgrade
        since, until = _at(upgrade["created_at"]), _at(upgrade["completed_at"])
        out["gap"].append(q.longest_gap(since, until))
        out["failed"].append(len([t for t in q.failed if since <= t <= until + SLOW]))
        out["slow"].append(len([t for t in q.slow if since <= t <= until + SLOW]))
        out["errors"] += [e for t, e in q.errors if since <= t <= until + SLOW]
    return out


def steady_gap(members: list[Member], until: float) -> dict[str, Any]:
    """The gaps between successful answers before any upgrade began: the client's own pace."""
    gaps: list[float] = []
    for member in members:
        assert member.querier is not None
        oks = [t for t in member.querier.oks if t < until]
        gaps += [b - a for a, b in zip(oks, oks[1:], strict=False)]
    return summary(gaps, digits=3)


# ---------------------------------------------------------------- the run


async def measure(service: Service, base: Path, args: argparse.Namespace) -> dict[str, Any]:
    versions = LocalVersions.from_settings(LocalRuntimeSettings(**service_local(args)))
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        members = await create_fleet(http, service, args)
        built = time.monotonic()
        sem = asyncio.Semaphore(4)

        async def filled(n: int, member: Member) -> None:
            async with sem:
                member.before = await fill(http, member.target, n, args)

        await asyncio.gather(*(filled(n, m) for n, m in enumerate(members)))
        build_seconds = time.monotonic() - built
        for member in members:
            copy_data(service, member, base / "floor")
            member.querier = Querier(http, member.target, args.poll)
            member.querier.start()
        await floor_pass(http, members, versions, args)
        began = time.time()
        done = await rollout(http, service, args)
        await floor_pass(http, members, versions, args)
        for member in members:
            assert member.querier is not None
            await member.querier.stop()
        upgrades = [await upgrade_of(http, service, m) for m in members]
        after = [await read_back(http, m.target) for m in members]
    served = [served_version(service.data_dir, m.instance_id) for m in members]
    return report(args, members, upgrades, after, served, done, began, build_seconds)


def report(
    args: argparse.Namespace,
    members: list[Member],
    upgrades: list[dict[str, Any]],
    after: list[Any],
    served: list[str],
    done: dict[str, Any],
    began: float,
    build_seconds: float,
) -> dict[str, Any]:
    ours = downtimes(members, upgrades)
    floors = [statistics.median(m.floors) for m in members]
    o, f = summary(ours["gap"], digits=3), summary(floors, digits=3)
    to = SECOND_VERSION if args.to_version == SECOND_VERSION else "installed"
    return {
        "benchmark": "upgrade",
        "instances": args.instances,
        "vectors_per_instance": args.vectors,
        "dim": args.dim,
        "from": args.from_version,
        "to": args.to_version,
        "waves": args.waves,
        "max_concurrent": args.max_concurrent,
        "floor_group": args.floor_group,
        "poll_seconds": args.poll,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "data_build_seconds": round(build_seconds, 1),
        "rollout": {
            "state": done["state"],
            "seconds": done["seconds"],
            "waves": [w["members"] for w in done["waves"]],
            "floor_downtimes_summed_seconds": round(sum(floors), 2),
        },
        "upgrades": {
            p: sum(u["phase"] == p for u in upgrades) for p in {u["phase"] for u in upgrades}
        },
        "rollbacks": sum(u["phase"] == "rolled_back" for u in upgrades),
        "downtime_seconds": {
            "ours": o,
            "floor": f,
            "floor_runs_per_instance": len(members[0].floors),
        },
        "ratio": {
            "p50": round(o["p50"] / f["p50"], 3),
            "p99": round(o["p99"] / f["p99"], 3),
            "per_instance_median": round(
                statistics.median(a / b for a, b in zip(ours["gap"], floors, strict=True)), 3
            ),
        },
        "client_during_upgrade": {
            "failed_requests": sum(ours["failed"]),
            "failures": dict(Counter(ours["errors"])),
            "slow_requests_over_1s": sum(ours["slow"]),
            "steady_gap_before_rollout": steady_gap(members, began),
        },
        "phase_seconds": phase_times(upgrades),
        "data_checked": {
            "unchanged": sum(a == m.before for a, m in zip(after, members, strict=True)),
            "of": len(members),
            "serving_to_version": sum(s == to for s in served),
        },
        "goal": {"p99_downtime_under_2s": o["p99"] < 2.0, "p99_downtime_seconds": o["p99"]},
    }


def service_local(args: argparse.Namespace) -> dict[str, Any]:
    """The local runtime's versions: the installed one, and the second version's venv."""
    return {"chroma_versions": {SECOND_VERSION: {"python": str(args.second_python.absolute())}}}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    local = service_local(args)
    env = default_reconciler_timing() | {
        "CHROMA_ORCH_LOCAL__CHROMA_VERSIONS": json.dumps(local["chroma_versions"])
    }
    with workdir() as base, postgres(base) as admin_url:
        service = Service(await fresh_database(admin_url), base / "data", **env)
        await service.start()
        try:
            return await measure(service, base, args)
        finally:
            await service.stop()
            kill_chroma_processes(base / "data")


def arguments() -> argparse.Namespace:
    import chromadb

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--vectors", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--from", dest="from_version", default=chromadb.__version__)
    parser.add_argument("--to", dest="to_version", default=SECOND_VERSION)
    parser.add_argument(
        "--waves", type=lambda s: [int(w) for w in s.split(",")], default=[10, 40, 100]
    )
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument(
        "--floor-group", type=int, default=1, help="floors stopped and started at once"
    )
    parser.add_argument(
        "--poll", type=float, default=0.03, help="seconds between a client's queries"
    )
    parser.add_argument("--second-python", type=Path, default=SECOND_PYTHON)
    args = parser.parse_args()
    args.installed = chromadb.__version__
    return args


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(arguments())), indent=2))

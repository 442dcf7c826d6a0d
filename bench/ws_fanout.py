"""WebSocket fan-out: N subscribers on /v1/events, M state changes. Prints JSON.

    python bench/ws_fanout.py [--subscribers 500] [--changes 200] [--rate 100]

The service runs as its own process (reconciler off) on an embedded PostgreSQL.
Subscribers: one in ten holds the admin token (sees every change), the others
hold tenant tokens spread over ``--tenants`` tenants (see their tenant's
changes). Each change is one committed transaction that updates an instance and
appends its event, as the reconciler does, paced at ``--rate`` per second.

latency: from the moment the writer's COMMIT returned to the moment a
subscriber's client decoded the frame (same clock, this process).
lost: events a subscriber should have seen but did not (must be 0);
duplicates and out_of_order are counted too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import websockets
from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import fresh_database, postgres, summary, workdir  # noqa: E402
from chroma_orch.db.models import Instance  # noqa: E402
from chroma_orch.db.outbox import commit, record_event  # noqa: E402
from chroma_orch.db.session import create_engine, create_session_factory  # noqa: E402
from tests.conftest import ADMIN_TOKEN  # noqa: E402
from tests.e2e.service import Service  # noqa: E402
from tests.helpers import create_tenant  # noqa: E402


@dataclass
class Progress:
    """Counts deliveries; ``complete`` is set once ``target`` (known at the end) is met."""

    count: int = 0
    target: int | None = None
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self) -> None:
        self.count += 1
        self.check()

    def check(self) -> None:
        if self.target is not None and self.count >= self.target:
            self.complete.set()


@dataclass
class Subscriber:
    tenant_id: str | None
    received: list[tuple[int, float]] = field(default_factory=list)


async def _listen(ws: websockets.ClientConnection, sub: Subscriber, progress: Progress) -> None:
    async for raw in ws:
        message = json.loads(raw)
        if message["type"] == "event":
            sub.received.append((message["seq"], time.monotonic()))
            progress.add()


async def _setup(service: Service, tenants: int) -> list[tuple[str, str, str]]:
    """(tenant id, token, instance id) per tenant."""
    out = []
    async with service.client() as admin:
        for n in range(tenants):
            tenant_id, token = await create_tenant(admin, f"bench-{n}")
            async with service.client(token) as http:
                created = await http.post("/v1/instances", json={"name": "main"})
                out.append((tenant_id, token, created.json()["instance"]["id"]))
    return out


async def _change(sessions: object, instance_id: str, tenant_id: str, n: int) -> tuple[int, float]:
    async with sessions() as session:  # type: ignore[operator]
        phase = "running" if n % 2 else "starting"
        await session.execute(
            update(Instance).where(Instance.id == uuid.UUID(instance_id)).values(phase=phase)
        )
        record_event(
            session,
            type="instance.phase_changed",
            instance_id=uuid.UUID(instance_id),
            tenant_id=uuid.UUID(tenant_id),
            before={"phase": "starting" if n % 2 else "running"},
            after={"phase": phase, "endpoint": None, "failure": None},
        )
        seq = await commit(session)
        assert seq is not None
        return seq, time.monotonic()


async def run(database_url: str, base: Path, args: argparse.Namespace) -> dict[str, object]:
    service = Service(
        database_url,
        base / "data",
        CHROMA_ORCH_RECONCILER__ENABLED="false",
        # a few tokens hold every subscriber here: lift the per-token share of sockets
        CHROMA_ORCH_EVENTS__MAX_SOCKETS_PER_TOKEN=str(args.subscribers),
    )
    await service.start()
    engine = create_engine(database_url)
    sessions = create_session_factory(engine)
    try:
        setup = await _setup(service, args.tenants)
        subs: list[Subscriber] = []
        sockets: list[websockets.ClientConnection] = []
        url = service.url.replace("http://", "ws://") + "/v1/events"
        connect_started = time.monotonic()
        for n in range(args.subscribers):
            admin = n % 10 == 0
            tenant_id, token, _ = setup[n % len(setup)]
            ws = await websockets.connect(
                url,
                additional_headers={"Authorization": f"Bearer {ADMIN_TOKEN if admin else token}"},
            )
            assert json.loads(await ws.recv())["type"] == "snapshot"
            sockets.append(ws)
            subs.append(Subscriber(None if admin else tenant_id))
        connect_s = time.monotonic() - connect_started
        progress = Progress()
        readers = [
            asyncio.create_task(_listen(ws, s, progress))
            for ws, s in zip(sockets, subs, strict=True)
        ]
        committed: dict[int, tuple[float, str]] = {}
        started = time.monotonic()
        for n in range(args.changes):
            tenant_id, _, instance_id = setup[n % len(setup)]
            seq, at = await _change(sessions, instance_id, tenant_id, n)
            committed[seq] = (at, tenant_id)
            await asyncio.sleep(max(0.0, started + (n + 1) / args.rate - time.monotonic()))

        def expected(sub: Subscriber) -> set[int]:
            return {s for s, (_, t) in committed.items() if sub.tenant_id in (None, t)}

        progress.target = sum(len(expected(sub)) for sub in subs)
        progress.check()  # in case everything already arrived
        try:
            await asyncio.wait_for(progress.complete.wait(), 15)
        except TimeoutError:
            pass  # counted as lost below
        delivered_s = time.monotonic() - started
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    finally:
        await engine.dispose()
        await service.stop()
    latencies, lost, duplicates, out_of_order = [], 0, 0, 0
    for sub in subs:
        seqs = [s for s, _ in sub.received]
        lost += len(expected(sub) - set(seqs))
        duplicates += len(seqs) - len(set(seqs))
        out_of_order += sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b <= a)
        latencies += [max(0.0, at - committed[s][0]) * 1000 for s, at in sub.received]
    return {
        "benchmark": "ws_fanout",
        "subscribers": args.subscribers,
        "admin_subscribers": sum(1 for s in subs if s.tenant_id is None),
        "tenants": args.tenants,
        "state_changes": args.changes,
        "rate_per_s": args.rate,
        "deliveries": len(latencies),
        "latency_ms": {k: summary(latencies, 1, 2)[k] for k in ("p50", "p99", "max")},
        "messages_lost": lost,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "connect_all_s": round(connect_s, 2),
        "changes_to_last_delivery_s": round(delivered_s, 2),
        "cpus": os.cpu_count(),
    }


async def main(args: argparse.Namespace) -> dict[str, object]:
    with workdir() as base, postgres(base) as admin_url:
        return await run(await fresh_database(admin_url), base, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="state changes per second")
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["messages_lost"] == 0 else 1)

"""Chaos: 50 seeded lifecycle operations over ~8 instances, sent to two replicas while
a seeded schedule ``kill -9``s a replica at random moments and restarts it. In the
end everything converges with no duplicate or orphan servers, no leaked ports, no
lost intents, and both replicas stream the committed event log in order.

Replay a run with ``CHROMA_ORCH_CHAOS_SEED=<seed>`` (the seed is printed on failure).
The operation sequence and the kill schedule come from the seed; where a kill lands
relative to a request depends on timing, which is the point.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.chaos.cluster import (
    ReplicaSet,
    allocated_ports,
    assert_local_invariants,
    chaos_seed,
    event_seqs,
    gaps,
    instance_rows,
    intent_rows,
    stream_until,
    wait_converged,
)
from tests.e2e.service import Service
from tests.helpers import create_tenant

SEED = chaos_seed(20240607)
OPERATIONS = 50
SLOTS = 8


@dataclass
class Slot:
    instance_id: str | None = None
    desired: str | None = None  # running | stopped


@dataclass
class Ledger:
    accepted_intents: set[str] = field(default_factory=set)
    answers: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    kills: list[tuple[float, int]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


class Driver:
    """Sends each request to a replica of the seed's choice, falling over to the
    other one when it is down (a launch keeps its Idempotency-Key across retries)."""

    def __init__(self, replicas: ReplicaSet, token: str, ledger: Ledger) -> None:
        self.replicas = replicas
        self.token = token
        self.ledger = ledger

    async def send(self, first: int, method: str, path: str, **kwargs: object) -> httpx.Response:
        deadline = time.monotonic() + 60
        order = [first, 1 - first]
        attempt = 0
        while True:
            replica: Service = self.replicas[order[attempt % 2]]
            attempt += 1
            try:
                async with replica.client(self.token) as http:
                    response = await http.request(method, path, **kwargs)  # type: ignore[arg-type]
            except httpx.TransportError:
                self.ledger.transport_errors += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
                continue
            self.ledger.answers[response.status_code] += 1
            if response.status_code == 202:
                self.ledger.accepted_intents.add(str(response.json()["intent"]["id"]))
            return response


async def _operations(rng: random.Random, driver: Driver, ledger: Ledger) -> list[str]:
    slots = [Slot() for _ in range(SLOTS)]
    ids: list[str] = []
    for number in range(OPERATIONS):
        await asyncio.sleep(rng.uniform(0.0, 0.4))
        slot = slots[rng.randrange(SLOTS)]
        target = rng.randrange(2)
        if slot.instance_id is None:
            key = str(uuid.UUID(int=rng.getrandbits(128)))
            response = await driver.send(
                target,
                "POST",
                "/v1/instances",
                json={"name": f"n{number}"},
                headers={"Idempotency-Key": key},
            )
            assert response.status_code == 202, response.text
            slot.instance_id, slot.desired = str(response.json()["instance"]["id"]), "running"
            ids.append(slot.instance_id)
            ledger.log.append(f"{number}: launch -> {slot.instance_id} via {target}")
            continue
        actions = ["stop", "start", "delete"] + (
            ["restart"] * 2 if slot.desired == "running" else []
        )
        action = rng.choice(actions)
        path = f"/v1/instances/{slot.instance_id}"
        if action == "delete":
            response = await driver.send(target, "DELETE", path)
        else:
            response = await driver.send(target, "POST", f"{path}/{action}")
        ledger.log.append(
            f"{number}: {action} {slot.instance_id} via {target}: {response.status_code}"
        )
        assert response.status_code == 202, response.text
        if action == "delete":
            slot.instance_id = slot.desired = None
        else:
            slot.desired = "stopped" if action == "stop" else "running"
    return ids


async def _kill_schedule(
    rng: random.Random, replicas: ReplicaSet, ledger: Ledger, done: asyncio.Event
) -> None:
    began = time.monotonic()
    while not done.is_set():
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        victim = rng.randrange(len(replicas))
        if done.is_set():
            break
        await replicas[victim].kill9()
        ledger.kills.append((round(time.monotonic() - began, 2), victim))
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        await replicas[victim].start(timeout=60)


async def test_chaos_kill_9_replicas(database_url: str, tmp_path: Path) -> None:
    replicas = ReplicaSet(database_url, tmp_path / "data", 2)
    ledger = Ledger()
    try:
        await replicas.start()
        async with replicas[0].client() as admin:
            _, token = await create_tenant(admin, "acme")
        driver = Driver(replicas, token, ledger)
        done = asyncio.Event()
        chaos = asyncio.create_task(_kill_schedule(random.Random(SEED + 1), replicas, ledger, done))
        try:
            ids = await _operations(random.Random(SEED), driver, ledger)
        finally:
            done.set()
            await chaos  # lets a restart in progress finish; every replica is up again
        assert ledger.kills, "the schedule killed nothing"
        context = f"seed={SEED} kills={ledger.kills} answers={ledger.answers}"

        try:
            rows = await wait_converged(database_url, timeout=90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {context}; operations={ledger.log}") from None
        assert sorted(rows) == sorted(ids), context
        assert_local_invariants(rows, await allocated_ports(database_url), replicas.data_dir)

        intents = await intent_rows(database_url)
        assert ledger.accepted_intents <= set(intents), f"accepted intents lost; {context}"
        statuses = Counter(str(i["status"]) for i in intents.values())
        assert set(statuses) <= {"succeeded", "superseded"}, f"{statuses}; {context}"
        assert not [c for c in ledger.answers if c >= 500], context

        seqs = await event_seqs(database_url)
        holes = gaps(seqs)
        # A replica killed between its event insert and its commit burns sequence
        # numbers (identity values are not transactional): holes may follow kills,
        # never more than there were kills. Streams must match the committed log.
        assert len(holes) <= len(ledger.kills), f"holes={holes}; {context}"
        for replica in replicas.replicas:
            streamed = await stream_until(replica, seqs[0] - 1, seqs[-1])
            assert streamed == seqs, replica.url
        assert {r.phase for r in (await instance_rows(database_url)).values()} <= {
            "running",
            "stopped",
            "deleted",
        }
    finally:
        await replicas.stop()

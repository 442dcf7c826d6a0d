"""Two and three replicas (separate service processes, each with its reconciler) on one
database and one data directory: every lifecycle request, whichever replica takes it,
is carried out exactly once, and every replica streams the same gap-free event log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from tests.chaos.cluster import (
    ReplicaSet,
    Subscriber,
    allocated_ports,
    assert_local_invariants,
    event_seqs,
    gaps,
    intent_rows,
    spawn_counts,
    wait_converged,
)
from tests.helpers import create_tenant


@pytest.fixture(params=[2, 3], ids=["2-replicas", "3-replicas"])
async def replicas(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[ReplicaSet]:
    replica_set = ReplicaSet(database_url, tmp_path / "data", request.param)
    try:
        await replica_set.start()
        yield replica_set
    finally:
        await replica_set.stop()


async def _accepted(request: Awaitable[httpx.Response]) -> str:
    response = await request
    assert response.status_code == 202, response.text
    return str(response.json()["instance"]["id"])


async def test_every_intent_carried_out_once(replicas: ReplicaSet, database_url: str) -> None:
    n = len(replicas)
    async with AsyncExitStack() as stack:
        subscribers = [await stack.enter_async_context(Subscriber(r)) for r in replicas.replicas]
        async with replicas[0].client() as admin:
            _, token = await create_tenant(admin, "acme")
        clients = [await stack.enter_async_context(r.client(token)) for r in replicas.replicas]

        # four launches at once, each through another replica
        ids = list(
            await asyncio.gather(
                *(
                    _accepted(clients[k % n].post("/v1/instances", json={"name": f"i{k}"}))
                    for k in range(4)
                )
            )
        )
        await wait_converged(database_url)
        assert spawn_counts(replicas.data_dir, ids) == dict.fromkeys(ids, 1)

        # concurrent actions through different replicas; the stop is sent twice
        i0, i1, i2, i3 = ids
        answers = await asyncio.gather(
            clients[1 % n].post(f"/v1/instances/{i0}/stop"),
            clients[2 % n].post(f"/v1/instances/{i0}/stop"),
            clients[2 % n].post(f"/v1/instances/{i1}/restart"),
            clients[0].delete(f"/v1/instances/{i2}"),
        )
        assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
        await wait_converged(database_url)
        assert (await clients[n - 1].post(f"/v1/instances/{i0}/start")).status_code == 202
        rows = await wait_converged(database_url)

        assert {i: rows[i].phase for i in ids} == {
            i0: "running",
            i1: "running",
            i2: "deleted",
            i3: "running",
        }
        assert rows[i0].generation == 3  # the repeated stop was no new request
        # launch + start, launch + restart, launch: one spawn per request, none twice
        assert spawn_counts(replicas.data_dir, [i0, i1, i3]) == {i0: 2, i1: 2, i3: 1}
        assert_local_invariants(rows, await allocated_ports(database_url), replicas.data_dir)
        statuses = sorted(i["status"] for i in (await intent_rows(database_url)).values())
        assert set(statuses) <= {"succeeded", "superseded"}, statuses

        seqs = await event_seqs(database_url)
        assert seqs == sorted(set(seqs))
        assert gaps(seqs) == [], "holes in the event log without any crash or rollback"
        for subscriber in subscribers:
            assert subscriber.snapshot_seq is not None
            expected = [s for s in seqs if s > subscriber.snapshot_seq]
            got = await subscriber.wait_for_seq(seqs[-1])
            assert got == expected, subscriber.service.url
            assert subscriber.other == []

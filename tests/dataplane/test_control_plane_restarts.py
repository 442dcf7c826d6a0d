"""Tenants do not notice the control plane going away: Nginx in front of two real
replicas (one PostgreSQL, one data directory), a tenant's real Chroma client
querying its real server through Nginx while a replica is killed with kill -9 and
while both are restarted one after the other. Nginx asks the next replica when
one fails (proxy_next_upstream) and, while none answers, uses an expired
authorisation for a bounded time (stale-if-error); revocation keeps its bound."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chromadb
import httpx
from chromadb.config import Settings

from chroma_orch.settings import NGINX_AUTH_CACHE_SECONDS, NGINX_AUTH_STALE_SECONDS
from tests.chaos.cluster import ReplicaSet
from tests.dataplane.nginx_proc import Nginx, running_nginx
from tests.helpers import bearer, create_tenant, wait_for

PORT_RANGE = "CHROMA_ORCH_LOCAL__PORT_RANGE"
# How long a phase lasts with a replica down: past one cache lifetime, so that
# Nginx has to ask the replicas again (and meets the one that is down).
DOWN_FOR = NGINX_AUTH_CACHE_SECONDS + 1.5


@dataclass
class Poller:
    """One client querying its collection through Nginx, in a thread, until stopped."""

    base: str
    token: str
    answers: list[tuple[float, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _collection(self) -> Any:
        settings = Settings(anonymized_telemetry=False)
        client = chromadb.HttpClient(host=self.base, headers=bearer(self.token), settings=settings)
        docs = client.get_or_create_collection("docs")
        vectors: list[Sequence[float]] = [[1.0, 0.0], [0.0, 1.0]]
        docs.upsert(ids=["a", "b"], embeddings=vectors)
        return docs

    def run(self) -> None:
        docs = self._collection()
        while not self._stop.wait(0.02):
            try:
                docs.query(query_embeddings=[[0.9, 0.1]], n_results=1)
                self.answers.append((time.monotonic(), None))
            except Exception as exc:  # whatever the client makes of a failed answer
                self.answers.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))

    def failures(self, since: float = 0.0) -> list[tuple[float, str | None]]:
        return [a for a in self.answers if a[1] is not None and a[0] >= since]

    async def answered_after(self, moment: float, count: int = 5) -> None:
        """Wait until ``count`` answers came after ``moment``."""
        await _until(lambda: sum(1 for t, _ in self.answers if t > moment) >= count, 60)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Poller]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            await _until(lambda: len(self.answers) >= 5, 60)
            yield self
        finally:
            self._stop.set()
            await asyncio.to_thread(thread.join, 30)


async def _until(check: Callable[[], object], timeout: float) -> None:
    async def probe() -> object:
        return check()

    await wait_for(probe, timeout=timeout)


@asynccontextmanager
async def two_replicas_behind_nginx(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[ReplicaSet, Nginx]]:
    replicas = ReplicaSet(database_url, tmp_path / "data", 2)
    try:
        await replicas.start()
        ports = replicas[0].env[PORT_RANGE]
        async with running_nginx([r.port for r in replicas.replicas], tenant_ports=ports) as nginx:
            yield replicas, nginx
    finally:
        await replicas.stop()


async def _tenant_instance(replicas: ReplicaSet) -> tuple[str, str, str]:
    """A tenant's running instance: (instance id, token, token id)."""
    async with replicas[0].client() as admin:
        tenant_id, _ = await create_tenant(admin, "acme")
        made = (await admin.post(f"/v1/tenants/{tenant_id}/tokens", json={"name": "p"})).json()
    async with replicas[0].client(made["token"]) as http:
        created = await http.post("/v1/instances", json={"name": "main"})
        instance_id: str = created.json()["instance"]["id"]
        waited = await http.get(f"/v1/instances/{instance_id}/wait", params={"phase": "running"})
        assert waited.json()["phase"] == "running", waited.text
    return instance_id, made["token"], made["id"]


async def _down_for_a_while(poller: Poller) -> None:
    """Keep polling through more than one auth cache lifetime."""
    began = time.monotonic()
    await asyncio.sleep(DOWN_FOR)  # a span of time is the point here
    await poller.answered_after(began + DOWN_FOR - 1)


async def test_no_failed_request_while_replicas_are_killed_and_restarted(
    database_url: str, tmp_path: Path
) -> None:
    async with two_replicas_behind_nginx(database_url, tmp_path) as (replicas, nginx):
        instance_id, token, token_id = await _tenant_instance(replicas)
        poller = Poller(f"{nginx.url}/i/{instance_id}", token)
        async with poller.running():
            await replicas[0].kill9()  # kill -9 in the middle of the traffic
            await _down_for_a_while(poller)
            await replicas[0].start(timeout=60)
            for replica in replicas.replicas:  # a rolling restart
                await replica.stop()
                await _down_for_a_while(poller)
                await replica.start(timeout=60)
                await poller.answered_after(time.monotonic())
            errors = nginx.log("error.log")[-2000:]
            assert poller.failures() == [], (poller.failures()[:5], errors)
            assert len(poller.answers) > 50

            # Revocation still takes effect within the cache lifetime while a
            # replica is down: Nginx asks the other one.
            await replicas[1].kill9()
            async with replicas[0].client() as admin:
                assert (await admin.delete(f"/v1/tokens/{token_id}")).status_code == 200
            revoked = time.monotonic()
            await _until(lambda: poller.failures(revoked), NGINX_AUTH_CACHE_SECONDS + 10)
            refused_after = poller.failures(revoked)[0][0] - revoked
        assert refused_after <= NGINX_AUTH_CACHE_SECONDS + 2, refused_after
        assert "401" in str(poller.failures(revoked)[-1][1]) or "nauthori" in str(
            poller.failures(revoked)[-1][1]
        ), poller.failures(revoked)[-1]
        assert f"127.0.0.1:{replicas[0].port}" in nginx.upstreams()


async def test_with_no_replica_nginx_uses_an_authorisation_a_bounded_time_longer(
    database_url: str, tmp_path: Path
) -> None:
    """With every replica down, an expired authorisation serves for
    NGINX_AUTH_STALE_SECONDS more, and no longer."""
    async with two_replicas_behind_nginx(database_url, tmp_path) as (replicas, nginx):
        instance_id, token, _ = await _tenant_instance(replicas)
        url = f"{nginx.url}/i/{instance_id}/api/v2/heartbeat"
        answers: list[tuple[float, int]] = []
        async with httpx.AsyncClient(headers=bearer(token), timeout=30) as client:
            assert (await client.get(url)).status_code == 200  # authorised now
            cached_at = time.monotonic()
            await asyncio.gather(*(replica.stop() for replica in replicas.replicas))
            deadline = cached_at + NGINX_AUTH_CACHE_SECONDS + NGINX_AUTH_STALE_SECONDS + 5
            while time.monotonic() < deadline and not any(s != 200 for _, s in answers):
                answers.append((time.monotonic(), (await client.get(url)).status_code))
                await asyncio.sleep(0.05)
        served = [t - cached_at for t, status in answers if status == 200]
        refused = [t - cached_at for t, status in answers if status != 200]
        # Nginx counts whole seconds: an authorisation stored at second S is fresh
        # through S + 5 (5 to 6 s), then stale through S + 5 + 2 (7 to 8 s). So it
        # serves past 6 s only stale, and is refused once the stale time is over.
        fresh_at_most = NGINX_AUTH_CACHE_SECONDS + 1
        assert served, refused[:1]
        assert max(served) > fresh_at_most, (served[-3:], refused[:1])
        assert refused, served[-3:]
        assert refused[0] <= fresh_at_most + NGINX_AUTH_STALE_SECONDS + 1, (served[-3:], refused)

"""No request authorised for one instance reaches another instance's server, even
when the other's server is given the very address the first one left.

A one-port range forces the reuse on the local runtime: tenant B's server leaves
the port, tenant A's server gets it at once. B keeps sending requests through
Nginx (whose auth cache still holds B's route) and through the built-in proxy the
whole time; none of them may reach A's server, while B's instance is stopping,
stopped or started again (and then the roles swap)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chromadb
import httpx
import pytest
from chromadb.config import Settings as ChromaSettings
from pydantic import ValidationError

from chroma_orch.api.dataplane import AUTH_CACHE_CONTROL
from chroma_orch.dataplane.nginx import default_source
from chroma_orch.settings import NGINX_AUTH_CACHE_SECONDS, NGINX_AUTH_STALE_SECONDS, ProxySettings
from tests.dataplane.nginx_proc import running_nginx
from tests.e2e.service import Service, free_port, hold_port, running_service
from tests.helpers import bearer, create_tenant, wait_for

QUARANTINE = 10.0  # the least the settings accept: route cache 2 s + Nginx's 5 + 2 s + 1 s
EMBEDDING: list[Sequence[float]] = [[1.0, 2.0, 3.0]]
COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections"


@dataclass
class Tenant:
    token: str
    instance_id: str = ""

    def bases(self, service: Service, nginx_url: str) -> dict[str, str]:
        return {
            "builtin": f"{service.url}/i/{self.instance_id}",
            "nginx": f"{nginx_url}/i/{self.instance_id}",
        }


@dataclass
class Probe:
    """Lists collections through both doors with one tenant's token, over and over."""

    bases: dict[str, str]
    token: str
    answers: list[tuple[str, int, str]] = field(default_factory=list)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Probe]:
        stop = asyncio.Event()
        task = asyncio.create_task(self._loop(stop))
        try:
            yield self
        finally:
            stop.set()
            await task

    async def _loop(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=30, headers=bearer(self.token)) as http:
            while not stop.is_set():
                for door, base in self.bases.items():
                    answer = await http.get(base + COLLECTIONS)
                    self.answers.append((door, answer.status_code, answer.text))
                await asyncio.sleep(0.02)

    def reached(self, secret: str) -> list[tuple[str, int, str]]:
        return [answer for answer in self.answers if secret in answer[2]]


async def _launch(service: Service, tenant: Tenant, port: int) -> dict[str, Any]:
    async with service.client(tenant.token) as http:
        if tenant.instance_id:
            started = await http.post(f"/v1/instances/{tenant.instance_id}/start")
            assert started.status_code == 202, started.text
        else:
            created = await http.post("/v1/instances", json={"name": "main"})
            assert created.status_code == 202, created.text
            tenant.instance_id = created.json()["instance"]["id"]
        wait = f"/v1/instances/{tenant.instance_id}/wait"
        running: dict[str, Any] = (await http.get(wait, params={"phase": "running"})).json()
    assert running["phase"] == "running", running
    assert running["endpoint"]["port"] == port  # the one port of the range: reused
    return running


async def _stop(service: Service, tenant: Tenant) -> None:
    async with service.client(tenant.token) as http:
        stopped = await http.post(f"/v1/instances/{tenant.instance_id}/stop")
        assert stopped.status_code == 202, stopped.text
        wait = f"/v1/instances/{tenant.instance_id}/wait"
        done = (await http.get(wait, params={"phase": "stopped"})).json()
    assert done["phase"] == "stopped", done


def _write_secret(port: int, secret: str) -> None:
    """The owner's data, written straight to its server (no door involved)."""
    client = chromadb.HttpClient(
        host="127.0.0.1", port=port, settings=ChromaSettings(anonymized_telemetry=False)
    )
    client.get_or_create_collection(secret).add(ids=["x"], embeddings=EMBEDDING)


async def _warm(bases: dict[str, str], token: str) -> None:
    """Every door has just authorised ``token``: Nginx caches that for 5 s."""
    async with httpx.AsyncClient(timeout=30, headers=bearer(token)) as http:
        for base in bases.values():
            assert (await http.get(base + COLLECTIONS)).status_code == 200


async def _until_served(bases: dict[str, str], token: str, secret: str) -> float:
    """Seconds until both doors serve the owner its own data."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30, headers=bearer(token)) as http:
        for base in bases.values():
            while True:
                answer = await http.get(base + COLLECTIONS)
                if answer.status_code == 200 and secret in answer.text:
                    break
                assert answer.status_code == 503, answer.text  # quarantined, then served
                assert time.monotonic() - started < QUARANTINE + 10, answer.text
                await asyncio.sleep(0.2)
    return time.monotonic() - started


async def _hand_over(
    service: Service, nginx_url: str, port: int, leaving: Tenant, arriving: Tenant, secret: str
) -> Probe:
    """``leaving`` (running on ``port``) stops while its token keeps knocking;
    ``arriving`` starts on the same port and writes ``secret``."""
    await _warm(leaving.bases(service, nginx_url), leaving.token)
    probe = Probe(leaving.bases(service, nginx_url), leaving.token)
    async with probe.running():
        await _stop(service, leaving)
        await _launch(service, arriving, port)
        await asyncio.to_thread(_write_secret, port, secret)
        await _until_served(arriving.bases(service, nginx_url), arriving.token, secret)
    return probe


async def test_a_reused_port_never_serves_the_tenant_that_left_it(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "CHROMA_ORCH_LOCAL__PORT_RANGE": f"{port}-{port}",
        "CHROMA_ORCH_PROXY__ADDRESS_QUARANTINE": str(QUARANTINE),
    }
    async with (
        running_service(database_url, tmp_path / "data", **env) as service,
        # with the port's connection pool: kept connections never outlive the server
        running_nginx(service.port, tenant_ports=f"{port}-{port}") as nginx,
    ):
        async with service.client() as admin:
            b = Tenant((await create_tenant(admin, "bravo"))[1])
            a = Tenant((await create_tenant(admin, "alpha"))[1])
        await _launch(service, b, port)

        # B leaves the port and A gets it: B's requests never reach A's server.
        probe = await _hand_over(service, nginx.url, port, b, a, "alpha_secret")
        assert probe.reached("alpha_secret") == []
        statuses = {status for _, status, _ in probe.answers[len(probe.bases) * 2 :]}
        assert statuses <= {200, 503}, probe.answers  # its own server while up, then 503

        # And back: A leaves, B starts again on the same port; A's requests never
        # reach B's server, and B is served its own (empty) server again.
        probe = await _hand_over(service, nginx.url, port, a, b, "bravo_secret")
        assert probe.reached("bravo_secret") == []
        assert any("alpha_secret" in text for _, _, text in probe.answers)  # it did ask


async def test_nginx_hands_a_refused_request_on_or_asks_for_a_retry(
    database_url: str, tmp_path: Path
) -> None:
    """Nginx streams bodies to the server (no buffering, so that the connection
    opens right after the authorisation). When the cached address of a moved
    instance refuses the connection, a request without a body is served at the new
    address by the built-in proxy; one with a body (which cannot be replayed) gets
    503 with Retry-After, and goes through once sent again."""
    async with (
        running_service(database_url, tmp_path / "data") as service,
        running_nginx(
            service.port, tenant_ports=service.env["CHROMA_ORCH_LOCAL__PORT_RANGE"]
        ) as nginx,
    ):
        async with service.client() as admin:
            tenant = Tenant((await create_tenant(admin, "bravo"))[1])
        async with service.client(tenant.token) as http:
            created = await http.post("/v1/instances", json={"name": "main"})
            tenant.instance_id = created.json()["instance"]["id"]
            wait = f"/v1/instances/{tenant.instance_id}/wait"
            first = (await http.get(wait, params={"phase": "running"})).json()
            url = f"{nginx.url}/i/{tenant.instance_id}{COLLECTIONS}"
            await _warm({"nginx": url.removesuffix(COLLECTIONS)}, tenant.token)
            await _stop(service, tenant)
            with hold_port(first["endpoint"]["port"]):  # so that it moves
                await http.post(f"/v1/instances/{tenant.instance_id}/start")
                moved = (await http.get(wait, params={"phase": "running"})).json()
            assert moved["endpoint"]["port"] != first["endpoint"]["port"]
            auth = bearer(tenant.token)
            listed = await http.get(url, headers=auth)  # Nginx still has the old address
            body = {"name": "moved", "get_or_create": True}
            refused = await http.post(url, json=body, headers=auth)

            async def sent_again() -> httpx.Response | None:
                again = await http.post(url, json=body, headers=auth)
                assert again.status_code in (200, 503), again.text
                return again if again.status_code == 200 else None

            # once Nginx's cached authorisation (5 s) expires
            created_again = await wait_for(sent_again, timeout=15, interval=0.5)
        assert listed.status_code == 200, listed.text
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["code"] == "instance_moved"
        assert created_again.json()["name"] == "moved"
        assert "upstream=127.0.0.1:" + str(first["endpoint"]["port"]) in nginx.log("access.log")


def test_the_quarantine_knows_how_long_nginx_keeps_an_authorisation() -> None:
    """The settings' floor for the quarantine counts Nginx's auth cache lifetime:
    the two must not drift apart, nor the time Nginx may use it stale (while no
    replica answers). And bodies are streamed, so that Nginx uses an authorisation
    right away, not once a slow body has arrived."""
    config = default_source().read_text()
    assert f"proxy_cache_valid 200 {NGINX_AUTH_CACHE_SECONDS}s;" in config
    assert config.count("proxy_cache_valid") == 1
    assert AUTH_CACHE_CONTROL == (
        f"max-age={NGINX_AUTH_CACHE_SECONDS}, stale-if-error={NGINX_AUTH_STALE_SECONDS}"
    )
    assert "proxy_cache_use_stale" not in config  # unbounded: never
    assert "Cache-Control" not in config[config.index("proxy_ignore_headers") :].split(";")[0]
    routed = config[config.index('location ~ "^/i/') : config.index("location = /_chroma_orch")]
    assert "proxy_request_buffering off;" in routed
    floor = 2.0 + NGINX_AUTH_CACHE_SECONDS + NGINX_AUTH_STALE_SECONDS + 1
    accepted = ProxySettings(route_cache_ttl=2.0, address_quarantine=floor, connect_timeout=5)
    assert accepted.address_quarantine == floor
    with pytest.raises(ValidationError, match="must be at least"):
        ProxySettings(route_cache_ttl=2.0, address_quarantine=floor - 0.5, connect_timeout=5)
    with pytest.raises(ValidationError, match="must be at least"):  # a longer pool wait
        ProxySettings(route_cache_ttl=2.0, address_quarantine=floor, connect_timeout=8)

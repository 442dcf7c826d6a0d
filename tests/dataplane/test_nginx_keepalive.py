"""Nginx keeps idle connections to the local runtime's tenant servers (one pool per
port of the range, chroma-orch-tenants.conf), where a variable address alone would
open a connection per request."""

from __future__ import annotations

import httpx
import psutil

from tests.dataplane.nginx_proc import running_nginx
from tests.e2e.service import Service, running_instance
from tests.helpers import bearer


def _server_port(service: Service, instance_id: str, token: str) -> int:
    answer = httpx.get(f"{service.url}/v1/instances/{instance_id}", headers=bearer(token))
    return int(answer.json()["endpoint"]["url"].rsplit(":", 1)[1])


def _workers_connections(master_pid: int, port: int) -> list[object]:
    """The Nginx workers' established connections to ``port`` on loopback."""
    workers = psutil.Process(master_pid).children()
    return [
        c
        for worker in workers
        for c in worker.net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]


async def test_requests_to_a_tenant_server_reuse_nginx_connections(service: Service) -> None:
    token, instance_id = await running_instance(service)
    port = _server_port(service, instance_id, token)
    ports = service.env["CHROMA_ORCH_LOCAL__PORT_RANGE"]
    async with running_nginx(service.port, tenant_ports=ports) as nginx:
        url = f"{nginx.url}/i/{instance_id}/api/v2/heartbeat"
        async with httpx.AsyncClient(headers=bearer(token)) as client:
            for _ in range(20):
                assert (await client.get(url)).status_code == 200
        kept = _workers_connections(nginx.pid, port)
        # Idle connections stay open for the next request (at most one per worker
        # for sequential requests), rather than one opened and closed per request.
        assert kept, "no idle connection kept to the tenant server"
        assert len(kept) <= len(psutil.Process(nginx.pid).children())
        assert f"upstream=127.0.0.1:{port}" in nginx.log("access.log")

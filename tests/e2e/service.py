"""Runs the real service (``chroma-orch serve`` under uvicorn) as a child process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import psutil

from tests.conftest import ADMIN_TOKEN, port_window
from tests.helpers import create_tenant


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@contextmanager
def hold_port(port: int) -> Iterator[None]:
    """Bind (without listening) so the port is neither free nor answering: an
    instance restarted meanwhile must move to another port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the old server's TIME_WAITs
        sock.bind(("127.0.0.1", port))
        yield


SERVE = ("-m", "chroma_orch.cli", "serve")
"""How the service is started by default: ``chroma-orch serve``."""


class Service:
    def __init__(self, database_url: str, data_dir: Path, **env: str) -> None:
        self.command: Sequence[str] = SERVE  # the interpreter's arguments
        self.wrapper: Sequence[str] = ()  # a command the interpreter runs under
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"service-{self.port}.log"
        self.env = {
            **os.environ,
            "CHROMA_ORCH_DATABASE_URL": database_url,
            "CHROMA_ORCH_DATA_DIR": str(data_dir),
            "CHROMA_ORCH_ADMIN_TOKEN": ADMIN_TOKEN,
            "CHROMA_ORCH_PORT": str(self.port),
            "CHROMA_ORCH_LOCAL__PORT_RANGE": port_window(),
            "CHROMA_ORCH_RECONCILER__LEASE_SECONDS": "5",
            "CHROMA_ORCH_LOCAL__LAUNCH_BUDGET": "3",
            "CHROMA_ORCH_RECONCILER__OBSERVE_INTERVAL": "0.3",
            "CHROMA_ORCH_RECONCILER__RESYNC_INTERVAL": "1",
            "CHROMA_ORCH_LIMITS__REQUESTS_PER_SECOND": "10000",
            "CHROMA_ORCH_LIMITS__BURST": "10000",
            **env,
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.wrapper,
                sys.executable,
                *self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(f"service exited:\n{self.log_path.read_text()[-3000:]}")
                try:
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"service did not start:\n{self.log_path.read_text()[-3000:]}")

    async def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def client(self, token: str = ADMIN_TOKEN) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


def chroma_processes(data_dir: Path) -> dict[str, list[psutil.Process]]:
    """Live Chroma servers serving a path under ``data_dir``, by instance id."""
    found: dict[str, list[psutil.Process]] = {}
    marker = str(data_dir / "instances") + os.sep
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        for arg in cmdline:
            if arg.startswith(marker) and not arg.endswith(".lock"):
                found.setdefault(Path(arg).name, []).append(proc)
                break
    return found


def kill_chroma_processes(data_dir: Path) -> None:
    for procs in chroma_processes(data_dir).values():
        for proc in procs:
            try:
                proc.kill()
                proc.wait(5)
            except psutil.Error:
                pass


@asynccontextmanager
async def running_service(database_url: str, data_dir: Path, **env: str) -> AsyncIterator[Service]:
    """The real service, started; on exit stopped, and any Chroma server it left killed."""
    service = Service(database_url, data_dir, **env)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        kill_chroma_processes(data_dir)


async def running_instance(service: Service, tenant: str = "acme") -> tuple[str, str]:
    """A new tenant's token and its one instance, launched and running."""
    async with service.client() as admin:
        _, token = await create_tenant(admin, tenant)
    async with service.client(token) as http:
        created = await http.post("/v1/instances", json={"name": "main"})
        instance_id: str = created.json()["instance"]["id"]
        wait = f"/v1/instances/{instance_id}/wait"
        assert (await http.get(wait, params={"phase": "running"})).json()["phase"] == "running"
    return token, instance_id

"""Real Nginx on ``deploy/nginx.conf``, rendered for a loopback backend, as the
tests run it (a private prefix under /tmp, stopped and removed afterwards)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from chroma_orch.dataplane.nginx import find_js_module, parse_ports, render
from tests.conftest import require_program
from tests.e2e.service import free_port, port_is_open
from tests.helpers import wait_for

# The workers' user: not Nginx's built-in default (nobody), so that the tests
# see the configuration's `user` directive at work.
WORKERS = "daemon"


@dataclass
class Nginx:
    url: str
    prefix: Path
    pid: int  # the master's

    def log(self, name: str) -> str:
        path = self.prefix / name
        return path.read_text() if path.exists() else ""

    def upstreams(self) -> set[str]:
        """Every upstream address the access log names (deploy/nginx.conf's
        ``upstream=$upstream_addr``). A request Nginx passed on to a second server
        after the first failed lists both, ``"A, B"``; one handed to another upstream
        group (an auth subrequest) ``"A : B"``."""
        found: set[str] = set()
        for line in self.log("access.log").splitlines():
            _, marker, rest = line.partition(" upstream=")
            if marker:
                value = rest.split(" upstream_time=")[0]
                found.update(re.split(r"\s*[,:]\s+", value.strip()))
        return found


@asynccontextmanager
async def running_nginx(
    backend_port: int | Sequence[int],
    source: Path | None = None,
    tenant_ports: str | None = None,
) -> AsyncIterator[Nginx]:
    """Nginx in front of the service replicas on ``backend_port``; skips without
    nginx (or its njs module). ``source``: another configuration than
    deploy/nginx.conf (with chroma-orch.js beside it); ``tenant_ports``: the local
    runtime's port range (``LOW-HIGH``), given connection pools."""
    program = require_program("nginx")
    try:
        find_js_module()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    prefix = Path(tempfile.mkdtemp(prefix="co-nginx-", dir="/tmp"))
    os.chmod(prefix, 0o755)  # workers run as an unprivileged user when the master is root
    port = free_port()
    config = render(
        prefix,
        backends=[f"127.0.0.1:{p}" for p in _ports(backend_port)],
        listen=[f"127.0.0.1:{port}"],
        user=WORKERS,
        source=source,
        tenant_ports=parse_ports(tenant_ports) if tenant_ports else None,
    )
    process = await asyncio.create_subprocess_exec(
        program, "-c", str(config), "-p", f"{prefix}/", "-g", "daemon off;",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip

    async def up() -> bool:
        if process.returncode is not None:
            assert process.stderr is not None
            raise RuntimeError(f"nginx exited: {(await process.stderr.read()).decode()}")
        return port_is_open("127.0.0.1", port)

    try:
        await wait_for(up, timeout=10)
        yield Nginx(f"http://127.0.0.1:{port}", prefix, process.pid)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 10)
        shutil.rmtree(prefix, ignore_errors=True)


def _ports(backend_port: int | Sequence[int]) -> Sequence[int]:
    return [backend_port] if isinstance(backend_port, int) else backend_port

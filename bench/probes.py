"""The local runtime's readiness probes against the libraries they stand in for.
Prints JSON.

    python bench/probes.py [--servers 500] [--connections 1000] [--probes 1000]

listens_on: ours (sock_diag netlink, LISTEN sockets only) vs psutil's
``Process.net_connections(kind="tcp")`` (parses /proc/net/tcp{,6}: every socket
on the machine), for one server while a crowd process holds ``--servers``
listening sockets and ``--connections`` established connections.

http_status: ours (raw HTTP/1.1 on a non-blocking socket) vs one shared
``httpx.AsyncClient`` (no keep-alive: every probe a fresh connection, as ours),
CPU per probe while nothing listens yet (most probes of a starting server) and
against a server answering 200 (in this process, so its CPU is included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chroma_orch.runtimes.local.launch import http_status, listens_on  # noqa: E402
from tests.e2e.service import free_port  # noqa: E402

_CROWD = """
import socket, sys, time
servers, connections = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(servers):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); held.append(s)
for _ in range(connections):
    held.append(socket.create_connection(held[0].getsockname())); held.append(held[0].accept()[0])
print(flush=True); time.sleep(600)
"""
_ONE = """
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True); time.sleep(600)
"""


def _psutil_listens_on(process: psutil.Process, port: int) -> bool:
    sockets = process.net_connections(kind="tcp")
    return any(s.status == psutil.CONN_LISTEN and s.laddr.port == port for s in sockets)


def _median_ms(check: Callable[[], bool], reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        assert check()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e3, 3)


def listening_lookup(servers: int, connections: int) -> dict[str, float]:
    argv = [sys.executable, "-c", _CROWD, str(servers), str(connections)]
    crowd = subprocess.Popen(argv, stdout=subprocess.PIPE)
    one = subprocess.Popen([sys.executable, "-c", _ONE], stdout=subprocess.PIPE)
    try:
        assert crowd.stdout is not None
        assert one.stdout is not None
        crowd.stdout.readline()
        port = int(one.stdout.readline())
        process = psutil.Process(one.pid)
        return {
            "ours_ms": _median_ms(lambda: listens_on(process, port), 200),
            "psutil_ms": _median_ms(lambda: _psutil_listens_on(process, port), 50),
        }
    finally:
        crowd.kill()
        one.kill()
        crowd.wait()
        one.wait()


async def _cpu_us(probe: Callable[[], Awaitable[int | None]], want: int | None, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        assert await probe() == want
    return round((time.process_time() - started) / n * 1e6, 1)


async def heartbeat_probe(probes: int) -> dict[str, float]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    up, down = server.sockets[0].getsockname()[1], free_port()
    limits = httpx.Limits(max_keepalive_connections=0)
    async with server, httpx.AsyncClient(limits=limits, trust_env=False) as client:

        async def via_httpx(port: int) -> int | None:
            try:
                response = await client.get(f"http://127.0.0.1:{port}/api/v2/heartbeat")
            except httpx.HTTPError:
                return None
            return response.status_code

        async def ours(port: int) -> int | None:
            return await http_status("127.0.0.1", port, "/api/v2/heartbeat", 0.5)

        return {
            "ours_refused_cpu_us": await _cpu_us(lambda: ours(down), None, probes),
            "httpx_refused_cpu_us": await _cpu_us(lambda: via_httpx(down), None, probes),
            "ours_200_cpu_us": await _cpu_us(lambda: ours(up), 200, probes),
            "httpx_200_cpu_us": await _cpu_us(lambda: via_httpx(up), 200, probes),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=500)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=1000)
    args = parser.parse_args()
    result = {
        "benchmark": "probes",
        "listens_on": listening_lookup(args.servers, args.connections),
        "http_status": asyncio.run(heartbeat_probe(args.probes)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

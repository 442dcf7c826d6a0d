"""A simulated cloud in a process of its own, shared by several service replicas.

``python -m chroma_orch.runtimes.sim.cloud_server --host 127.0.0.1 --port 8900`` runs
one cloud (``LocalCloud``: servers, fates, responders) with the settings of its own
``CHROMA_ORCH_SIM__*`` environment, and serves it over HTTP (uvicorn, Starlette) to
``RemoteCloud`` (``CHROMA_ORCH_SIM__CLOUD_URL``). It prints ``listening on
http://HOST:PORT`` once it accepts calls (``--port 0``: a free port). The servers'
responders live here, one listening socket each: the open-file limit is raised to
its hard limit at start. The wire format is ``wire``; docs/sim-runtime.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import socket
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
import uvloop
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chroma_orch.runtimes.base import ExitCause, RuntimeUnavailableError, StartFailedError
from chroma_orch.runtimes.sim import wire
from chroma_orch.runtimes.sim.local import LocalCloud
from chroma_orch.runtimes.sim.settings import SimRuntimeSettings

EXIT_LOG = 100_000
"""Exits kept for the long-poll (a replica further behind misses the oldest)."""
MAX_WAIT = 60.0
KEEP_ALIVE = 300
"""Seconds an idle connection is kept: longer than the client's own (httpx: 5 s), so
the client, not the server, ends it, and a call never races a server's close."""


class CloudSettings(BaseSettings):
    """The ``CHROMA_ORCH_SIM__*`` environment, read as the service reads it."""

    model_config = SettingsConfigDict(
        env_prefix="CHROMA_ORCH_", env_nested_delimiter="__", extra="ignore"
    )
    sim: SimRuntimeSettings = SimRuntimeSettings()


class Exits:
    """Every exit in order, numbered from 1: the long-poll's cursor is the last number."""

    def __init__(self) -> None:
        self.ids: deque[str] = deque(maxlen=EXIT_LOG)
        self.cursor = 0
        self.changed = asyncio.Event()

    def add(self, instance_id: str) -> None:
        self.ids.append(instance_id)
        self.cursor += 1
        self.changed.set()
        self.changed = asyncio.Event()

    async def after(self, since: int, wait: float) -> tuple[int, list[str]]:
        if 0 <= since and self.cursor <= since and wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(wait, MAX_WAIT))
        if since < 0 or since >= self.cursor:
            return self.cursor, []
        return self.cursor, list(self.ids)[-min(self.cursor - since, len(self.ids)) :]


Handler = Callable[[Request], Awaitable[Any]]


def app(cloud: LocalCloud) -> Starlette:
    exits = Exits()
    cloud.watch_exits(exits.add)

    async def health(request: Request) -> Any:
        return {"ok": True, "servers": len(cloud.state.servers), "exits": exits.cursor}

    async def start(request: Request) -> Any:
        spec = wire.spec_from_json(await request.json())
        try:
            server = await cloud.start(spec)
        except StartFailedError as error:
            return {"server": None, "failure": wire.failure_to_json(error)}
        return {"server": server.to_json(), "failure": None}

    async def observe(request: Request) -> Any:
        body = await request.json()
        servers = [(str(i), int(s)) for i, s in body["servers"]]
        observed = await cloud.observe(servers)
        return {"observations": [wire.observation_to_json(o) for o in observed]}

    async def stop(request: Request) -> Any:
        body = await request.json()
        await cloud.stop(str(body["instance_id"]), int(body["serial"]))
        return {}

    async def delete(request: Request) -> Any:
        body = await request.json()
        await cloud.delete(str(body["instance_id"]), bool(body["keep_data"]))
        return {}

    async def logs(request: Request) -> Any:
        return {"lines": await cloud.logs(request.query_params["instance_id"])}

    async def discover(request: Request) -> Any:
        return {"servers": [server.to_json() for server in await cloud.discover()]}

    async def crash(request: Request) -> Any:
        body = await request.json()
        cause = ExitCause(body.get("cause", ExitCause.CRASH.value))
        await cloud.crash(str(body["instance_id"]), cause)
        return {}

    async def fates(request: Request) -> Any:
        return {"servers": [list(fate) for fate in cloud.state.fates()]}

    async def crash_some(request: Request) -> Any:
        count = int(request.query_params.get("count", "1"))
        return {"crashed": [list(c) for c in cloud.state.crash_some(count)]}

    async def say(request: Request) -> Any:
        body = await request.json()
        await cloud.say(str(body["instance_id"]), str(body["line"]))
        return {}

    async def exits_after(request: Request) -> Any:
        since = int(request.query_params.get("since", "-1"))
        wait = float(request.query_params.get("wait", "0"))
        cursor, ids = await exits.after(since, wait)
        return {"cursor": cursor, "exits": ids}

    def route(path: str, handler: Handler, method: str) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(await handler(request))
            except ClientDisconnect:  # the caller went before its request was read
                return Response(status_code=499)  # (a replica killed: no trace logged)
            except RuntimeUnavailableError as error:
                return JSONResponse({"error": "Unavailable", "message": str(error)}, 503)
            except (KeyError, ValueError, TypeError, ValidationError) as error:
                return JSONResponse({"error": "BadRequest", "message": repr(error)}, 400)

        return Route(path, endpoint, methods=[method])

    return Starlette(
        routes=[
            route("/v1/health", health, "GET"),
            route("/v1/start", start, "POST"),
            route("/v1/observe", observe, "POST"),
            route("/v1/stop", stop, "POST"),
            route("/v1/delete", delete, "POST"),
            route("/v1/logs", logs, "GET"),
            route("/v1/discover", discover, "GET"),
            route("/v1/crash", crash, "POST"),
            route("/v1/fates", fates, "GET"),
            route("/v1/crash-some", crash_some, "POST"),
            route("/v1/say", say, "POST"),
            route("/v1/exits", exits_after, "GET"),
        ]
    )


def raise_open_files() -> int:
    """The soft limit of open files raised to the hard one (a socket per server)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def listen(host: str, port: int) -> socket.socket:
    """The cloud's listening socket, Nagle off (accepted sockets inherit it on Linux)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(host: str, port: int) -> None:
    settings = CloudSettings().sim.model_copy(update={"cloud_url": None})
    cloud = LocalCloud(settings)
    sock = listen(host, port)
    config = uvicorn.Config(
        app(cloud),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=KEEP_ALIVE,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if server.ready.is_set():
        bound_host, bound_port = sock.getsockname()[:2]
        sys.stdout.write(f"listening on http://{bound_host}:{bound_port}\n")
        sys.stdout.flush()
    ready.cancel()
    await task


class _Server(uvicorn.Server):
    """Tells when it accepts calls (``ready``)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    args = parser.parse_args(argv)
    raise_open_files()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port))  # the service's loop (uvicorn[standard])


if __name__ == "__main__":
    main()

"""A simulated cloud in another process (``cloud_server``), over HTTP (``CloudApi``).

One keep-alive ``httpx`` client per runtime, Nagle off (TCP_NODELAY: with it on, a
call took 46 ms of delayed ACK instead of 2 ms). Exits reach ``watch_exits``
callbacks through a long-poll of ``GET /v1/exits`` from the cursor the watch began
at, so every replica hears of every exit, whoever caused it. A cloud that does not
answer makes every call raise ``RuntimeUnavailableError`` (after at most ``timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from chroma_orch.runtimes.base import (
    ExitCallback,
    ExitCause,
    InstanceSpec,
    Observation,
    RuntimeUnavailableError,
    check_launch_by,
)
from chroma_orch.runtimes.sim import wire
from chroma_orch.runtimes.sim.wire import ServerRef

log = logging.getLogger(__name__)

EXITS_WAIT = 20.0
"""Seconds the cloud holds a long-poll of exits open when none comes."""
_RETRY = 0.5
"""Seconds between tries of the exits' long-poll while the cloud does not answer."""


class RemoteCloud:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._callbacks: list[ExitCallback] = []
        self._watch: asyncio.Task[None] | None = None
        self._watching = asyncio.Event()

    def client(self) -> httpx.AsyncClient:
        """The keep-alive client, made again after ``aclose`` (a closed runtime may
        still be asked, as the others may)."""
        if self._client is None:
            transport = httpx.AsyncHTTPTransport(
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
            )
            self._client = httpx.AsyncClient(
                base_url=self.url, transport=transport, timeout=self.timeout, trust_env=False
            )
        return self._client

    async def _request(
        self, method: str, path: str, before_send: Callable[[], None] | None = None, **kwargs: Any
    ) -> Any:
        """``before_send`` runs right before the request is sent (after the wait for
        the exits watch): a start's ``check_launch_by``."""
        self._begin_watch()
        if self._watch is not None and not self._watching.is_set() and path != "/v1/exits":
            # Every call made after watch_exits comes after the watch's starting
            # cursor: an exit it causes is heard (unless the cloud does not answer).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):  # not wait_for: gh-86296 on 3.11
                    await self._watching.wait()
        if before_send is not None:
            before_send()
        try:
            response = await self.client().request(method, path, **kwargs)
        except httpx.HTTPError as error:
            unreachable = f"the simulated cloud at {self.url}: {error!r}"
            raise RuntimeUnavailableError(unreachable) from error
        if response.status_code >= 500:
            raise RuntimeUnavailableError(
                f"the simulated cloud at {self.url} answered {response.status_code}"
            )
        if response.status_code >= 400 and response.status_code != 409:
            raise ValueError(f"the simulated cloud refused {path}: {response.text}")
        return response.json()

    async def start(self, spec: InstanceSpec) -> ServerRef:
        reply = await self._request(
            "POST", "/v1/start", lambda: check_launch_by(spec), json=wire.spec_to_json(spec)
        )
        if reply.get("failure") is not None:
            raise wire.failure_from_json(reply["failure"])
        return ServerRef.from_json(reply["server"])

    async def observe(self, servers: Sequence[tuple[str, int]]) -> list[Observation]:
        body = {"servers": [[instance_id, serial] for instance_id, serial in servers]}
        reply = await self._request("POST", "/v1/observe", json=body)
        return [wire.observation_from_json(raw) for raw in reply["observations"]]

    async def stop(self, instance_id: str, serial: int) -> None:
        await self._request("POST", "/v1/stop", json={"instance_id": instance_id, "serial": serial})

    async def delete(self, instance_id: str, keep_data: bool) -> None:
        body = {"instance_id": instance_id, "keep_data": keep_data}
        await self._request("POST", "/v1/delete", json=body)

    async def logs(self, instance_id: str) -> list[str]:
        reply = await self._request("GET", "/v1/logs", params={"instance_id": instance_id})
        return [str(line) for line in reply["lines"]]

    async def discover(self) -> list[ServerRef]:
        reply = await self._request("GET", "/v1/discover")
        return [ServerRef.from_json(raw) for raw in reply["servers"]]

    async def crash(self, instance_id: str, cause: ExitCause = ExitCause.CRASH) -> None:
        body = {"instance_id": instance_id, "cause": cause.value}
        await self._request("POST", "/v1/crash", json=body)

    async def say(self, instance_id: str, line: str) -> None:
        await self._request("POST", "/v1/say", json={"instance_id": instance_id, "line": line})

    async def exits(self, since: int, wait: float) -> tuple[int, list[str]]:
        """The cursor now and the instance ids of the exits after cursor ``since``
        (waiting up to ``wait`` seconds for one); ``since`` < 0: just the cursor."""
        reply = await self._request(
            "GET", "/v1/exits", params={"since": since, "wait": wait}, timeout=wait + 10.0
        )
        return int(reply["cursor"]), [str(i) for i in reply["exits"]]

    def watch_exits(self, callback: ExitCallback) -> None:
        """Starts the long-poll on the running loop, or with the first call when none
        runs yet (on_exit may be called while the service is being built)."""
        self._callbacks.append(callback)
        self._begin_watch()

    def _begin_watch(self) -> None:
        if self._watch is not None or not self._callbacks:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._watch = loop.create_task(self._follow_exits())

    async def _follow_exits(self) -> None:
        cursor = -1
        while True:
            try:
                now, exits = await self.exits(cursor, 0.0 if cursor < 0 else EXITS_WAIT)
            except (RuntimeUnavailableError, ValueError) as error:
                log.debug("sim cloud exits: %s", error)
                await asyncio.sleep(_RETRY)
                continue
            if cursor >= 0 and now >= cursor:
                for instance_id in exits:
                    for callback in list(self._callbacks):
                        try:
                            callback(instance_id)
                        except Exception:  # one bad callback must not end the watch
                            log.exception("exit callback failed instance=%s", instance_id)
            cursor = now  # a restarted cloud counts from 0 again: start over from it
            self._watching.set()

    async def aclose(self) -> None:
        self._callbacks.clear()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
            self._watching = asyncio.Event()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

"""The data plane: routing tenants' Chroma clients to their servers.

Two ways in, one decision (``Access.authorize``):

* the built-in proxy, ``/i/{instance_id}/...`` on the service itself, streams
  each request to the instance's server (``DataPlane.forward``);
* Nginx (``deploy/nginx.conf``) asks ``/internal/dataplane/auth`` once per
  token and instance (it caches the answer briefly) and proxies straight to the
  address it is given, so vector traffic does not pass through Python.

The built-in proxy shares itself out fairly: a per-tenant request rate, and
caps on requests in flight per instance and per tenant (``shares``).
"""

from __future__ import annotations

import logging
import uuid
from contextlib import AsyncExitStack

import httpx
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from chroma_orch.context import AppContext
from chroma_orch.dataplane.access import Access, InstanceNotRunningError, Route
from chroma_orch.dataplane.activity import ActivityRecorder
from chroma_orch.dataplane.forward import (
    ClientGoneError,
    Forwarder,
    UpstreamError,
    UpstreamResponse,
)
from chroma_orch.dataplane.shares import Shares
from chroma_orch.dataplane.wake import Waker
from chroma_orch.loops import Loops

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499
"""Nginx's status for a client that hung up before its request was complete (never
sent: there is no one to send it to; it shows in logs and metrics)."""


class DataPlane:
    def __init__(self, ctx: AppContext) -> None:
        settings = ctx.settings.proxy
        self.enabled = settings.enabled
        self.access = Access(ctx.sessions, ctx.hub, ctx.tokens, settings, ctx.auth_failures)
        self.activity = ActivityRecorder(ctx.sessions, settings.activity_flush_interval)
        self.forwarder = Forwarder(settings)
        self.waker = Waker(ctx, self.access)
        self.shares = Shares(
            settings.max_requests_per_instance,
            settings.max_requests_per_tenant,
            settings.requests_per_second,
            settings.burst,
        )

    async def authorize(
        self,
        token: str | None,
        instance_id: uuid.UUID,
        *,
        wake: bool = True,
        client: str | None = None,
    ) -> Route:
        """See ``Access.authorize``; a granted request counts as activity. Every
        authenticated request, granted or not, takes one from its tenant's rate
        (an admin token's own), so unknown ids or stopped instances cost nothing
        past it. With ``wake``, a request to a culled wake-on-request instance
        starts it and waits (bounded) until it runs."""
        principal = await self.access.principal(token, client)
        self.shares.check_rate(principal.tenant_id or principal.token_id)
        try:
            route = await self.access.authorize(principal, instance_id)
        except InstanceNotRunningError:
            if not wake:
                raise
            route = await self.waker.wake(principal, instance_id)
        self.activity.touch(instance_id)
        return route

    async def forward(self, route: Route, request: Request, prefix_len: int) -> Response:
        """Relay ``request`` (its path after the first ``prefix_len`` bytes) to ``route``
        if its instance's and its tenant's shares allow (else 429).

        The share is held until the response has been relayed. A client that hangs
        up before its body is complete gets one INFO line and a 499 nobody receives.
        """
        share = self.shares.take(route.instance_id, route.tenant_id)
        try:
            response = await self._relay(route, request, prefix_len)
        except ClientGoneError:
            share.release()
            log.info("client closed the connection mid-request instance=%s", route.instance_id)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except BaseException:
            share.release()
            raise
        response.on_close = share.release
        return response

    async def _relay(self, route: Route, request: Request, prefix_len: int) -> UpstreamResponse:
        """Send ``request`` to ``route``, or to the instance's new endpoint.

        A refused connection means the cached route may be stale (the instance
        stopped or moved): the route is read again, a stopped instance answers
        503, a moved one gets the request (nothing was sent yet), else 502. One
        whose server is paused for a snapshot's copy is waited for (``Waker.hold``).
        """
        try:
            return await self._send(route, request, prefix_len)
        except httpx.ConnectError:
            self.access.forget(route.instance_id)
        fresh = await self.access.route(route.instance_id, fresh=True)
        if fresh is None or fresh.tenant_id != route.tenant_id:
            raise UpstreamError("the instance is gone")
        if fresh.address in (None, route.address):
            held = await self.waker.hold(fresh, refused=route.address)
            if held is None:
                self.access.require_running(fresh)  # 503 when it stopped
                raise UpstreamError(
                    f"the instance's server refused the connection ({route.address})"
                )
            fresh = held
        try:
            return await self._send(fresh, request, prefix_len)
        except httpx.ConnectError as exc:
            self.access.forget(route.instance_id)
            raise UpstreamError("the instance's server refused the connection") from exc

    async def _send(self, route: Route, request: Request, prefix_len: int) -> UpstreamResponse:
        upstream = await self.forwarder.send(self.forwarder.build(route, request, prefix_len))
        return UpstreamResponse(upstream)


def start(app: FastAPI, ctx: AppContext, stack: AsyncExitStack, loops: Loops) -> None:
    """Set up the data plane's resources for the app's lifetime (on ``stack``), its
    activity writer in ``loops``."""
    plane = DataPlane(ctx)
    stack.push_async_callback(plane.forwarder.aclose)
    plane.activity.register(loops)
    stack.push_async_callback(plane.activity.flush)
    app.state.dataplane = plane


def get_dataplane(app: FastAPI) -> DataPlane:
    plane: DataPlane = app.state.dataplane
    return plane

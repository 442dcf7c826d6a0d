"""Wake-on-request: a proxied request to an instance the idle culler stopped starts
it again and is held until the server runs, for at most the wake timeout (the
runtime's ``wake_timeout``: seconds for local servers, minutes for Fargate tasks;
``culling.wake_timeout`` overrides it). A request whose instance will not start
within what is left of it (it waits out a crash or capacity backoff first) is not
held: it is answered at once, 503 with ``Retry-After`` saying when to come back.
Nginx hands its 503s to the built-in proxy, so both doors behave alike.

Snapshots: a running instance's server is stopped for a snapshot's copy and started
again at once (``reconciler/snapshots.py``). A request that meets the pause (the
connection refused, or no address while the server restarts) is held the same way
until the server runs again (``hold``), so clients see a slower answer, not errors.
Nothing was sent to the server when it is held, so it is sent once, afterwards."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from chroma_orch.context import AppContext
from chroma_orch.dataplane.access import Access, InstanceNotRunningError, Route
from chroma_orch.db import snapshot_rows
from chroma_orch.db.hub import wait_for_event
from chroma_orch.db.models import Instance
from chroma_orch.db.outbox import commit
from chroma_orch.domain.instances import InstanceService
from chroma_orch.domain.principal import SYSTEM, Principal
from chroma_orch.domain.states import Action, DesiredState, Phase
from chroma_orch.errors import NotFoundError

log = logging.getLogger(__name__)

_PAUSE_PHASES = frozenset({Phase.RUNNING, Phase.STOPPING, Phase.STARTING})
"""An instance's phases while its server is stopped for a copy (``stopping``) and
started again."""


class Waker:
    def __init__(self, ctx: AppContext, access: Access) -> None:
        self.ctx = ctx
        self.access = access
        override = ctx.settings.culling.wake_timeout
        self.timeout = ctx.runtime.wake_timeout if override is None else override
        self.retry_after = ctx.settings.proxy.retry_after

    async def wake(self, principal: Principal, instance_id: uuid.UUID) -> Route:
        """The running route, after starting the instance if it was culled; else
        ``InstanceNotRunningError`` (503, Retry-After)."""
        route = await self.access.route(instance_id, fresh=True)
        if route is None or not principal.can_see(route.tenant_id):
            raise NotFoundError(f"instance {instance_id} not found")
        if route.address is not None:
            return route
        if not route.wakeable:
            held = await self.hold(route)
            return held if held is not None else self.access.require_running(route)
        with self.ctx.hub.watch(str(instance_id)) as changed:
            if route.desired_state == DesiredState.STOPPED:
                await self._start(instance_id)
            return await self._until_running(instance_id, changed)

    async def hold(self, route: Route, refused: str | None = None) -> Route | None:
        """The instance's next running route (not ``refused``, the address that just
        refused a connection, unless the instance changed since), when its server is
        paused for a snapshot's copy; None when it is not (the caller answers as it
        would). ``InstanceNotRunningError`` when it does not run again in time."""
        instance_id = route.instance_id
        with self.ctx.hub.watch(str(instance_id)) as changed:
            if not await self._pausing(route):
                return None
            deadline = time.monotonic() + self.timeout
            while True:
                fresh = await self.access.route(instance_id, fresh=True)
                if fresh is None or fresh.tenant_id != route.tenant_id:
                    raise NotFoundError(f"instance {instance_id} not found")
                if fresh.address is not None and fresh.address != refused:
                    return fresh
                remaining = deadline - time.monotonic()
                if remaining <= 0 or fresh.phase not in _PAUSE_PHASES:
                    raise InstanceNotRunningError(
                        f"instance {instance_id} is {fresh.phase} (paused for a snapshot)",
                        self.retry_after,
                    )
                if await wait_for_event(changed, remaining):
                    refused = None  # it changed: the address may be the new server's

    async def _pausing(self, route: Route) -> bool:
        """Whether the instance's server may be stopped for a snapshot's copy."""
        if route.desired_state != DesiredState.RUNNING or route.phase not in _PAUSE_PHASES:
            return False
        async with self.ctx.sessions() as session:
            return await snapshot_rows.capture_open(session, route.instance_id)

    async def _start(self, instance_id: uuid.UUID) -> None:
        async with self.ctx.sessions() as session:
            await InstanceService(session, SYSTEM, self.ctx.policy).act(instance_id, Action.START)
            await commit(session)
        log.info("waking culled instance on request instance=%s", instance_id)

    async def _until_running(self, instance_id: uuid.UUID, changed: asyncio.Event) -> Route:
        deadline = time.monotonic() + self.timeout
        while True:
            route = await self.access.route(instance_id, fresh=True)
            if route is not None and route.address is not None:
                return route
            remaining = deadline - time.monotonic()
            if route is None or remaining <= 0 or route.phase == "failed":
                phase = route.phase if route else "gone"
                raise InstanceNotRunningError(
                    f"instance {instance_id} is {phase}; it was started, retry shortly",
                    self.retry_after,
                )
            if (start_in := await self._next_start_in(instance_id)) > remaining:
                raise InstanceNotRunningError(
                    f"instance {instance_id} is {route.phase}; its next start is in "
                    f"{start_in:.0f}s, longer than a request is held",
                    max(math.ceil(start_in), self.retry_after),
                )
            await wait_for_event(changed, remaining)

    async def _next_start_in(self, instance_id: uuid.UUID) -> float:
        """Seconds before the reconciler looks at the instance again: a backoff after a
        failed start (crash, no capacity); 0 when it is due or being worked on."""
        async with self.ctx.sessions() as session:
            due = await session.scalar(
                select(Instance.next_reconcile_at).where(Instance.id == instance_id)
            )
        if due is None:
            return 0.0
        return max((due - datetime.now(UTC)).total_seconds(), 0.0)

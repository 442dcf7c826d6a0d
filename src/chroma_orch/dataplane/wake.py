"""Wake-on-request: a proxied request to an instance the idle culler stopped starts
it again and is held until the server runs (bounded by ``culling.wake_timeout``)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from chroma_orch.context import AppContext
from chroma_orch.dataplane.access import Access, InstanceNotRunningError, Route
from chroma_orch.db.hub import wait_for_event
from chroma_orch.db.outbox import commit
from chroma_orch.domain.instances import InstanceService
from chroma_orch.domain.principal import SYSTEM, Principal
from chroma_orch.domain.states import Action, DesiredState
from chroma_orch.errors import NotFoundError

log = logging.getLogger(__name__)


class Waker:
    def __init__(self, ctx: AppContext, access: Access) -> None:
        self.ctx = ctx
        self.access = access
        self.timeout = ctx.settings.culling.wake_timeout
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
            self.access.require_running(route)  # raises the usual 503
        with self.ctx.hub.watch(str(instance_id)) as changed:
            if route.desired_state == DesiredState.STOPPED:
                await self._start(instance_id)
            return await self._until_running(instance_id, changed)

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
            await wait_for_event(changed, remaining)

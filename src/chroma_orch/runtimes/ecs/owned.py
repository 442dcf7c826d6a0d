"""Which ECS tasks belong to this service, and to which instance.

A task is ours when its ``startedBy`` is the service name; its instance comes from
its tags. ``live(since)`` lists our live tasks with a listing that *began* at or
after ``since`` (so a task launched before the caller asked is in it), sharing
one listing among all callers waiting at once (discovery, orphan collection,
deletes): a burst of hundreds of deletes costs a handful of ``ListTasks`` pages,
not one listing each. Starts list nothing (their ``clientToken`` makes RunTask
idempotent).

``ListTasks`` filters on ``startedBy`` alone: the API reference says that when
``startedBy`` is the filter it must be the only one. Whether ECS still wants a
task running is read from ``DescribeTasks`` (which also gives the tags naming the
instance); a task once desired ``STOPPED`` never runs again, so it is not
described again while it stays listed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from chroma_orch.runtimes.ecs.api import EcsApi
from chroma_orch.runtimes.ecs.tasks import TAG_GENERATION, TAG_INSTANCE, tags_of

log = logging.getLogger(__name__)

Describe = Callable[[Iterable[str]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class OwnedTask:
    task_arn: str
    instance_id: str
    generation: int | None


class OwnedTasks:
    def __init__(self, api: EcsApi, cluster: str, started_by: str, describe: Describe) -> None:
        self._api = api
        self._cluster = cluster
        self._started_by = started_by
        self._describe = describe
        self._latest: dict[str, str] = {}  # instance id -> newest task ARN seen
        self._finished: set[str] = set()  # listed task ARNs ECS wants stopped
        self._listing: asyncio.Task[dict[str, list[OwnedTask]]] | None = None
        self._listing_began = 0.0

    def remember(self, task: dict[str, Any]) -> OwnedTask | None:
        """Record a described task (with its tags); returns its owner when it is ours."""
        arn = str(task["taskArn"])
        tags = tags_of(task)
        instance_id = tags.get(TAG_INSTANCE)
        owned = None
        if task.get("startedBy") == self._started_by and instance_id:
            generation = tags.get(TAG_GENERATION)
            owned = OwnedTask(arn, instance_id, int(generation) if generation else None)
            self._latest[instance_id] = arn
        return owned

    def latest(self, instance_id: str) -> str | None:
        """The newest task ARN this process saw for the instance (for its logs)."""
        return self._latest.get(instance_id)

    async def live(self, since: float) -> dict[str, list[OwnedTask]]:
        """Our tasks ECS wants running, by instance id, listed no earlier than ``since``."""
        while True:
            listing = self._listing
            if listing is not None and self._listing_began >= since:
                return await asyncio.shield(listing)
            if listing is not None and not listing.done():
                await asyncio.wait([listing])  # began too early for this caller: list anew after
                continue
            self._listing_began = time.monotonic()
            self._listing = asyncio.create_task(self._list(), name="ecs-list-owned")
            self._listing.add_done_callback(self._listing_done)

    def _listing_done(self, task: asyncio.Task[dict[str, list[OwnedTask]]]) -> None:
        if self._listing is task:
            self._listing = None
        if not task.cancelled():
            task.exception()  # retrieved here; waiters get it through their shield

    async def _list(self) -> dict[str, list[OwnedTask]]:
        arns = await self._list_arns()
        self._finished &= set(arns)  # what ECS no longer lists needs no memory
        fresh = [arn for arn in arns if arn not in self._finished]
        described = await self._describe(fresh) if fresh else {}
        found: dict[str, list[OwnedTask]] = {}
        for arn in fresh:
            task = described.get(arn)
            if task is None:
                continue  # not visible to DescribeTasks (yet, or any more)
            owned = self.remember(task)
            if task.get("desiredStatus") != "RUNNING":
                self._finished.add(arn)
            elif owned is not None:
                found.setdefault(owned.instance_id, []).append(owned)
        return found

    async def _list_arns(self) -> list[str]:
        arns: list[str] = []
        params: dict[str, Any] = {
            "cluster": self._cluster,
            "startedBy": self._started_by,  # the only filter ListTasks allows with it
            "maxResults": 100,
        }
        while True:
            page = await self._api.call("ListTasks", **params)
            arns.extend(page.get("taskArns") or [])
            token = page.get("nextToken")
            if not token:
                return arns
            params["nextToken"] = token

    async def aclose(self) -> None:
        if self._listing is not None:
            self._listing.cancel()
            await asyncio.gather(self._listing, return_exceptions=True)

"""Reading a task's output back from CloudWatch Logs (the awslogs driver's stream
``PREFIX/CONTAINER/TASK_ID`` in the configured group)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from chroma_orch.runtimes.ecs.api import EcsApi
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.throttle import error_code

FOLLOW_INTERVAL = 1.0


def stream_name(settings: EcsSettings, task_arn: str) -> str:
    return f"{settings.log_stream_prefix}/{settings.container_name}/{task_arn.rsplit('/', 1)[-1]}"


class TaskLogs:
    def __init__(self, api: EcsApi, settings: EcsSettings) -> None:
        self._api = api
        self._settings = settings

    async def _page(self, task_arn: str, **params: Any) -> tuple[list[str], str | None]:
        try:
            page = await self._api.call(
                "GetLogEvents",
                service="logs",
                logGroupName=self._settings.log_group,
                logStreamName=stream_name(self._settings, task_arn),
                **params,
            )
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":  # no output yet
                return [], None
            raise
        lines = [str(event.get("message", "")).rstrip("\n") for event in page.get("events", [])]
        return lines, page.get("nextForwardToken")

    async def tail(self, task_arn: str, count: int) -> list[str]:
        if count <= 0:
            return []
        lines, _ = await self._page(task_arn, limit=min(count, 10000), startFromHead=False)
        return lines[-count:]

    async def follow(
        self,
        task_arn: str,
        count: int,
        gone: Callable[[], Awaitable[bool]],
        interval: float = FOLLOW_INTERVAL,
    ) -> AsyncIterator[list[str]]:
        """The last ``count`` lines, then new ones; ends once the task is gone and
        its stream has nothing more."""
        lines, token = await self._page(task_arn, limit=max(count, 1), startFromHead=False)
        yield lines[-count:] if count > 0 else []
        while True:
            await asyncio.sleep(interval)
            finished = await gone()
            params: dict[str, Any] = {"startFromHead": True}
            if token:
                params["nextToken"] = token
            else:
                params["limit"] = 10000
            lines, next_token = await self._page(task_arn, **params)
            if lines:
                yield lines
            token = next_token or token
            if finished and not lines:
                return

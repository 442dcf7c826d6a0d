"""The AWS side of the ``ecs`` runtime: one aioboto3 session, one ECS and one
CloudWatch Logs client (created on first use, closed by ``aclose``), a rate
limiter per API category and retries with jittered backoff.

botocore's own retries are off (``total_max_attempts=1``): ``retrying`` owns the
backoff, so a throttled call waits in its own coroutine and never ties up others
(``throttle`` says why botocore's retry modes do not fit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig

from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.throttle import RetryPolicy, is_throttle, rate_limiter, retrying

log = logging.getLogger(__name__)

CATEGORY = {
    "RunTask": "run",
    "StopTask": "run",
    "DescribeTasks": "describe",
    "ListTasks": "describe",
    "DescribeTaskDefinition": "describe",
    "RegisterTaskDefinition": "register",
    "GetLogEvents": "logs",
}
"""API category of every call this runtime makes (the IAM policy in docs/ecs.md lists them)."""


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


class EcsApi:
    """Rate-limited, retrying access to ECS and CloudWatch Logs."""

    def __init__(self, settings: EcsSettings, *, config: AioConfig | None = None) -> None:
        self.settings = settings
        self.policy = RetryPolicy(settings.retry_attempts, settings.retry_base, settings.retry_max)
        self.limiters = {
            name: rate_limiter(burst, rate) for name, (burst, rate) in settings.api_limits.items()
        }
        self._config = config or AioConfig(
            retries={"total_max_attempts": 1},
            max_pool_connections=settings.max_pool_connections,
            connect_timeout=10,
            read_timeout=30,
        )
        self._session = aioboto3.Session(region_name=settings.region)
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._client_hooks: list[Callable[[str, Any], None]] = []

    def on_client(self, hook: Callable[[str, Any], None]) -> None:
        """Call ``hook(service, client)`` for each client when it is created (tests
        register botocore event handlers this way)."""
        self._client_hooks.append(hook)
        for service, client in self._clients.items():
            hook(service, client)

    async def client(self, service: str) -> Any:
        """The shared ``ecs`` or ``logs`` client, created on first use."""
        existing = self._clients.get(service)
        if existing is not None:
            return existing
        async with self._lock:
            if service not in self._clients:
                client = await self._stack.enter_async_context(
                    self._session.client(
                        service, endpoint_url=self.settings.endpoint_url, config=self._config
                    )
                )
                for hook in self._client_hooks:
                    hook(service, client)
                self._clients[service] = client
            return self._clients[service]

    async def call(
        self,
        operation: str,
        *,
        service: str = "ecs",
        retry_if: Callable[[BaseException], bool] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Call ``operation`` (e.g. ``"DescribeTasks"``) within its category's rate,
        retrying throttling, 5xx and network errors (or what ``retry_if`` allows)."""
        client = await self.client(service)
        method = getattr(client, _snake(operation))
        limiter = self.limiters[CATEGORY[operation]]

        async def once() -> dict[str, Any]:
            result: dict[str, Any] = await method(**params)
            return result

        kwargs = {"retry_if": retry_if} if retry_if is not None else {}
        return await retrying(once, self.policy, limiter=limiter, what=operation, **kwargs)

    async def call_once(self, operation: str, **params: Any) -> dict[str, Any]:
        """One ECS call whose failure the caller handles itself (throttles still retried:
        a throttled call did not run)."""
        return await self.call(operation, retry_if=is_throttle, **params)

    async def aclose(self) -> None:
        self._clients.clear()
        await self._stack.aclose()

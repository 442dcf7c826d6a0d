"""The AWS side of the ``ecs`` runtime: one aioboto3 session, one ECS and one
CloudWatch Logs client (created on first use, closed by ``aclose``), token buckets
per API category (shared by every replica when the control plane offers them: AWS
counts per account and region) and retries with jittered backoff.

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

from chroma_orch.runtimes.base import AccountRateLimits
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.throttle import (
    LocalRateLimits,
    RetryPolicy,
    is_throttle,
    is_transient,
    retrying,
)

log = logging.getLogger(__name__)

CATEGORY = {
    "RunTask": "run",
    "StopTask": "stop",
    "DescribeTasks": "describe",
    "ListTasks": "describe",
    "DescribeTaskDefinition": "describe",
    "ListTaskDefinitionFamilies": "describe",
    "ListTaskDefinitions": "describe",
    "RegisterTaskDefinition": "register",
    "DeregisterTaskDefinition": "register",
    "GetLogEvents": "logs",
    "CreateAccessPoint": "efs",
    "DescribeAccessPoints": "efs",
    "DeleteAccessPoint": "efs",
    "DescribeVolumes": "ec2_describe",
    "DescribeSnapshots": "ec2_describe",
    "CreateSnapshot": "ec2_change",
    "CopySnapshot": "ec2_change",
    "DeleteVolume": "ec2_change",
    "DeleteSnapshot": "ec2_change",
}
"""API category of every call this runtime makes (the IAM policy in docs/ecs.md lists them)."""


def costs(operation: str, params: dict[str, Any]) -> list[tuple[str, int]]:
    """The tokens a call takes, per category: one call of its category, and for
    RunTask also one Fargate task launch per task started (``count``)."""
    spent = [(CATEGORY[operation], 1)]
    if operation == "RunTask":
        spent.append(("launch", int(params.get("count", 1))))
    return spent


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


class EcsApi:
    """Rate-limited, retrying access to ECS and CloudWatch Logs."""

    def __init__(
        self,
        settings: EcsSettings,
        *,
        config: AioConfig | None = None,
        rate_limits: AccountRateLimits | None = None,
    ) -> None:
        self.settings = settings
        self.policy = RetryPolicy(settings.retry_attempts, settings.retry_base, settings.retry_max)
        self._local = LocalRateLimits()
        self.rate_limits: AccountRateLimits = rate_limits or self._local
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
        """The shared ``ecs``, ``logs``, ``efs`` or ``ec2`` client, created on first use."""
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
        before_send: Callable[[], None] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Call ``operation`` (e.g. ``"DescribeTasks"``) within its category's rate,
        retrying throttling, 5xx and network errors (or what ``retry_if`` allows).
        ``before_send`` runs right before each attempt is sent (after its wait for the
        rate budget): what it raises ends the call, that attempt unsent."""
        client = await self.client(service)
        method = getattr(client, _snake(operation))

        async def once() -> dict[str, Any]:
            await self.within_budget(operation, params)
            if before_send is not None:
                before_send()
            result: dict[str, Any] = await method(**params)
            return result

        return await retrying(once, self.policy, retry_if=retry_if or is_transient, what=operation)

    async def within_budget(self, operation: str, params: dict[str, Any]) -> None:
        """Wait until the account's buckets (every replica's calls together) allow the
        call; while the shared buckets cannot be reached, this replica's own do."""
        for category, n in costs(operation, params):
            burst, rate = self.settings.api_limits[category]
            bucket = f"aws:{self.settings.region}:{category}"
            try:
                await self.rate_limits.acquire(bucket, burst, rate, n)
            except Exception as exc:  # the database is unreachable: limit this replica
                if self.rate_limits is self._local:
                    raise
                log.warning(
                    "shared rate limit unavailable bucket=%s error=%s", bucket, type(exc).__name__
                )
                await self._local.acquire(bucket, burst, rate, n)

    async def call_once(
        self, operation: str, before_send: Callable[[], None] | None = None, **params: Any
    ) -> dict[str, Any]:
        """One ECS call whose failure the caller handles itself (throttles still retried:
        a throttled call did not run)."""
        return await self.call(operation, retry_if=is_throttle, before_send=before_send, **params)

    async def aclose(self) -> None:
        self._clients.clear()
        await self._stack.aclose()

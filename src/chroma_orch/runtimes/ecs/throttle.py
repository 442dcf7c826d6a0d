"""Client-side rate limiting and retries for cloud APIs.

A ``TokenBucket`` per API category keeps calls under the provider's published
limits (AWS throttles per account and region with token buckets, so staying
under them avoids most ``ThrottlingException``s). ``retrying`` re-runs a call
that was throttled or hit a 5xx with full-jitter exponential backoff; it sleeps
in the calling coroutine only, so other instances' work goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from chroma_orch.telemetry.metrics import AWS_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)
_NETWORK_ERRORS = (OSError, TimeoutError, asyncio.TimeoutError)


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; ``acquire`` waits for one.

    Waiters are served first come, first served (one lock), so a burst of callers
    is spread over time instead of all retrying at once.
    """

    def __init__(self, burst: int, rate: float) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("a token bucket needs burst >= 1 and rate > 0")
        self.burst = float(burst)
        self.rate = rate
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    base: float = 0.2
    cap: float = 20.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.cap, self.base * 2**attempt))  # noqa: S311


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def is_throttle(exc: BaseException) -> bool:
    return error_code(exc) in THROTTLING_CODES or http_status(exc) == 429


def is_server_error(exc: BaseException) -> bool:
    status = http_status(exc)
    return status is not None and status >= 500


def is_transient(exc: BaseException) -> bool:
    """Throttled, a 5xx, or the network failed: worth another try later."""
    return is_throttle(exc) or is_server_error(exc) or _is_network_error(exc)


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, _NETWORK_ERRORS):
        return True
    name = type(exc).__name__  # botocore's EndpointConnectionError, ReadTimeoutError, ...
    return name.endswith(("ConnectionError", "TimeoutError", "ConnectionClosedError"))


async def retrying(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    bucket: TokenBucket | None = None,
    retry_if: Callable[[BaseException], bool] = is_transient,
    what: str = "call",
) -> T:
    """Run ``call`` (taking a token first), retrying while ``retry_if`` says so."""
    for attempt in range(policy.attempts):
        if bucket is not None:
            await bucket.acquire()
        try:
            return await call()
        except Exception as exc:
            kind = "throttle" if is_throttle(exc) else "error"
            AWS_ERRORS.labels(what, kind).inc()
            if not retry_if(exc) or attempt + 1 >= policy.attempts:
                raise
            delay = policy.delay(attempt)
            log.info(
                "retrying call=%s attempt=%d delay=%.2f error=%s",
                what,
                attempt + 1,
                delay,
                error_code(exc) or type(exc).__name__,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def describe_error(exc: BaseException) -> dict[str, Any]:
    """Loggable summary of an AWS error (code and status only: no request data)."""
    return {"code": error_code(exc), "status": http_status(exc), "type": type(exc).__name__}

"""Client-side rate limiting and retries for cloud APIs.

Token buckets per API category keep calls under the provider's published limits
(AWS throttles per account and region with token buckets, so staying under them
avoids most ``ThrottlingException``s): shared by every replica through the
database when the control plane offers them (``RuntimeServices.rate_limits``),
else ``LocalRateLimits`` (an aiolimiter ``rate_limiter`` per bucket). ``retrying`` re-runs a
call that was throttled or hit a 5xx with full-jitter exponential backoff
(tenacity); it sleeps in the calling coroutine only, so other instances' work goes
on meanwhile.

Why not botocore's own ``standard``/``adaptive`` retry modes: they are configured
per client, while the budgets here are per API category and the retry decision per
call (``call_once`` retries throttles only: a call that was throttled did not run,
one that failed otherwise may have); and ``AWS_ERRORS`` counts every failed
attempt, which botocore's retries would hide inside one call.

tenacity costs about 30 us of CPU per successful call where the hand-written loop
cost 1.5 us; an AWS call itself costs milliseconds, and ``bench/api_load.py`` (ECS
on moto) showed no difference beyond its run-to-run noise.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from chroma_orch.runtimes.base import RuntimeUnavailableError
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


def rate_limiter(burst: int, rate: float) -> AsyncLimiter:
    """``burst`` calls at once, then ``rate`` per second (a leaky bucket); waiters
    are served in turn, so a burst of callers is spread over time instead of all
    retrying at once."""
    if burst < 1 or rate <= 0:
        raise ValueError("a rate limiter needs burst >= 1 and rate > 0")
    return AsyncLimiter(burst, burst / rate)


class LocalRateLimits:
    """``AccountRateLimits`` of this replica alone: an aiolimiter per bucket, made on
    first use. For a runtime built without the database's shared buckets (tests
    building it directly) and for calls made while the database is unreachable."""

    def __init__(self) -> None:
        self._limiters: dict[str, AsyncLimiter] = {}

    async def acquire(self, bucket: str, burst: int, rate: float, n: int = 1) -> None:
        limiter = self._limiters.get(bucket)
        if limiter is None:
            limiter = self._limiters[bucket] = rate_limiter(burst, rate)
        await limiter.acquire(min(n, burst))


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    base: float = 0.2
    cap: float = 20.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (what
        ``retrying`` waits, by tenacity's ``wait_random_exponential``)."""
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
    retry_if: Callable[[BaseException], bool] = is_transient,
    what: str = "call",
) -> T:
    """Run ``call``, retrying while ``retry_if`` says so (a ``call`` that waits for
    its rate budget does so on every attempt); every failed attempt counts in
    ``AWS_ERRORS``."""

    async def attempt() -> T:
        try:
            return await call()
        except Exception as exc:
            AWS_ERRORS.labels(what, "throttle" if is_throttle(exc) else "error").inc()
            raise

    retryer = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_random_exponential(multiplier=policy.base, max=policy.cap),
        retry=retry_if_exception(retry_if),
        before_sleep=functools.partial(_log_retry, what),
        reraise=True,
    )
    return await retryer(attempt)


def _log_retry(what: str, state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    log.info(
        "retrying call=%s attempt=%d delay=%.2f error=%s",
        what,
        state.attempt_number,
        state.upcoming_sleep,
        (exc is not None and error_code(exc)) or type(exc).__name__,
    )


def describe_error(exc: BaseException) -> dict[str, Any]:
    """Loggable summary of an AWS error (code and status only: no request data)."""
    return {"code": error_code(exc), "status": http_status(exc), "type": type(exc).__name__}


def unavailable(operation: str, exc: Exception) -> RuntimeUnavailableError:
    """The runtime's "try again later" error for a failed AWS call (code only)."""
    if isinstance(exc, RuntimeUnavailableError):
        return exc
    kind = "throttled" if is_throttle(exc) else "transient" if is_transient(exc) else "failed"
    return RuntimeUnavailableError(f"{operation} {kind}: {error_code(exc) or type(exc).__name__}")

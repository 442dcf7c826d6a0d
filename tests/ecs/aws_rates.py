"""AWS's per-account token buckets for the ECS calls the runtime makes, as the
AWS-behaviour layer (``aws_behaviour.py``) enforces them.

AWS throttles "all API requests for each AWS account on a per-Region basis" with
the token bucket algorithm: "the bucket maximum capacity signifies the burst rate
and the bucket refill rate is the sustained rate"; a call over the quota fails with
``ThrottlingException`` ("Rate exceeded", HTTP 400) ("Request throttling for the
Amazon ECS API", https://docs.aws.amazon.com/AmazonECS/latest/APIReference/request-throttling.html).

Figures (docs/ecs.md "Rate limits" says which were read on which page):

- RunTask on Fargate: 20 calls/s, burst and sustained; tasks launched: bucket 100,
  refill 20/s ("AWS Fargate throttling quotas",
  https://docs.aws.amazon.com/AmazonECS/latest/developerguide/throttling.html).
- RegisterTaskDefinition: burst 20, 1/s sustained; DescribeTasks (with the other
  task read actions): 20/s sustained; StopTask: burst 100, 40/s; read burst 100
  (request-throttling page above).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

AWS_RATES: dict[str, tuple[int, float]] = {
    "run": (20, 20.0),
    "launch": (100, 20.0),
    "stop": (100, 40.0),
    "describe": (100, 20.0),
    "register": (20, 1.0),
}
"""Bucket: (maximum capacity = burst, refill per second = sustained)."""

BUCKET_OF = {
    "RunTask": "run",
    "StopTask": "stop",
    "DescribeTasks": "describe",
    "ListTasks": "describe",
    "DescribeTaskDefinition": "describe",
    "RegisterTaskDefinition": "register",
}
"""The bucket each ECS operation draws on (operations not named are not throttled)."""


@dataclass
class TokenBucket:
    capacity: int
    rate: float
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.capacity)  # a new account's bucket is full

    def take(self, n: int, now: float) -> bool:
        """Refill for the time elapsed (up to the capacity); take ``n`` if there are."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


@dataclass
class AccountRates:
    """Every bucket of one account and region; thread-safe (the layer's HTTP server
    answers each request on its own thread)."""

    rates: dict[str, tuple[int, float]] = field(default_factory=lambda: dict(AWS_RATES))
    on: bool = True
    storm_until: float = 0.0
    """Until then every call is throttled (another program eating the account's
    budget, or an AWS incident)."""
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.rates = dict(AWS_RATES)
            self.on = True
            self.storm_until = 0.0
            self._buckets.clear()

    def storm(self, seconds: float) -> None:
        with self._lock:
            self.storm_until = time.monotonic() + seconds

    def allow(self, operation: str) -> bool:
        """Whether the account's bucket for ``operation`` admits one call (taking its
        token when it does)."""
        bucket = BUCKET_OF.get(operation)
        return bucket is None or self._take(bucket, 1)

    def launch(self, count: int) -> bool:
        """Whether Fargate's task-launch bucket admits ``count`` new tasks."""
        return self._take("launch", count)

    def _take(self, bucket: str, n: int) -> bool:
        if not self.on:
            return True
        with self._lock:  # the clock read under the lock: calls count in arrival order
            now = time.monotonic()
            return now >= self.storm_until and self._bucket(bucket).take(n, now)

    def _bucket(self, name: str) -> TokenBucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(*self.rates[name])
        return bucket

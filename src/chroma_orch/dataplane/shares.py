"""Fair shares of the built-in proxy: a request rate per tenant, and caps on requests
in flight per instance and per tenant.

A request holds its share from admission until its response has been relayed
(or it failed), so one tenant's slow or stuck requests use up its own share,
never the upstream connection pool every tenant draws from. Refusals are
immediate (429 with ``Retry-After``), never queued. All counts are per replica.
"""

from __future__ import annotations

import uuid
from collections import Counter

from chroma_orch.domain.limits import RateLimiter
from chroma_orch.errors import RateLimitedError, TooManyRequestsError


class TenantRateLimitedError(RateLimitedError):
    title = "Request rate limit exceeded for this tenant's instances"


class InstanceBusyError(TooManyRequestsError):
    code, title = "instance_busy", "Too many requests in flight to this instance"


class TenantBusyError(TooManyRequestsError):
    code, title = "tenant_busy", "Too many requests in flight to this tenant's instances"


class Share:
    """One admitted request's place; ``release`` gives it back (once, however often called)."""

    def __init__(self, shares: Shares, instance_id: uuid.UUID, tenant_id: uuid.UUID) -> None:
        self._shares: Shares | None = shares
        self._keys = (instance_id, tenant_id)

    def release(self) -> None:
        if self._shares is not None:
            self._shares.give_back(*self._keys)
            self._shares = None


class Shares:
    def __init__(self, per_instance: int, per_tenant: int, rate: float, burst: int) -> None:
        self.per_instance = per_instance
        self.per_tenant = per_tenant
        self._instances: Counter[uuid.UUID] = Counter()
        self._tenants: Counter[uuid.UUID] = Counter()
        self._rates = RateLimiter(rate, burst)

    def check_rate(self, tenant_id: uuid.UUID) -> None:
        """Take one request from the tenant's bucket, or ``TenantRateLimitedError``."""
        try:
            self._rates.check(tenant_id)
        except RateLimitedError as exc:
            refused = TenantRateLimitedError(exc.detail)
            refused.headers = exc.headers  # its Retry-After
            raise refused from None

    def take(self, instance_id: uuid.UUID, tenant_id: uuid.UUID) -> Share:
        """A share for one more request, or ``InstanceBusyError``/``TenantBusyError``."""
        if self._instances[instance_id] >= self.per_instance:
            raise InstanceBusyError(
                f"{self.per_instance} requests to this instance are in flight already"
            )
        if self._tenants[tenant_id] >= self.per_tenant:
            raise TenantBusyError(
                f"{self.per_tenant} requests to this tenant's instances are in flight already"
            )
        self._instances[instance_id] += 1
        self._tenants[tenant_id] += 1
        return Share(self, instance_id, tenant_id)

    def give_back(self, instance_id: uuid.UUID, tenant_id: uuid.UUID) -> None:
        for counts, key in ((self._instances, instance_id), (self._tenants, tenant_id)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]

"""The service's errors and the problem document they become, free of any web framework.

Each error class carries its HTTP status and a stable machine-readable ``code``;
``chroma_orch.api.problems`` renders them as ``application/problem+json`` and documents
them in OpenAPI.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

PROBLEM_CONTENT_TYPE = "application/problem+json"


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where in the request: body, query, path ...")
    msg: str
    type: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable ``code`` to switch on."""

    type: str = Field(description="URI reference identifying the problem type.")
    title: str
    status: int
    code: str = Field(description="Stable machine-readable error code.")
    detail: str | None = None
    errors: list[FieldError] | None = Field(
        None, description="Field-level validation errors, when the request body was invalid."
    )


class AppError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}


class BadRequestError(AppError):
    status, code, title = 400, "bad_request", "Bad request"


class ValidationFailedError(AppError):
    status, code, title = 422, "validation_error", "Request validation failed"


class UnauthorizedError(AppError):
    status, code, title = 401, "unauthorized", "Missing or invalid token"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class ForbiddenError(AppError):
    status, code, title = 403, "forbidden", "Not allowed for this token"


class NotFoundError(AppError):
    status, code, title = 404, "not_found", "Not found"


class ConflictError(AppError):
    status, code, title = 409, "conflict", "Conflict"


class InvalidTransitionError(ConflictError):
    code, title = "invalid_transition", "Transition not allowed in the current state"


class IdempotencyKeyReusedError(ConflictError):
    code, title = "idempotency_key_reused", "Idempotency-Key was used with another request"


class PlanInUseError(ConflictError):
    """Deleting a plan a tenant has (``domain/plans.py``)."""

    code, title = "plan_in_use", "The plan is some tenant's plan"


class SnapshotsUnsupportedError(ConflictError):
    """The runtime keeps no copy of its instances' data (ECS with EFS or ephemeral storage)."""

    code, title = "snapshots_unsupported", "This runtime cannot snapshot instances"


class InvalidSpecError(AppError):
    status, code, title = 422, "invalid_spec", "The spec cannot run here"


class UpgradeInProgressError(ConflictError):
    code, title = "upgrade_in_progress", "The instance is being upgraded"


class PayloadTooLargeError(AppError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class UnsupportedMediaTypeError(AppError):
    status, code, title = 415, "unsupported_media_type", "Unsupported request body type"


class InvalidArchiveError(AppError):
    """An upload that is not a readable, safe snapshot archive."""

    status, code, title = 422, "invalid_archive", "Not a valid snapshot archive"


class IncompatibleArchiveVersionError(AppError):
    """Data another Chroma major version wrote than the servers here run."""

    status, code, title = 422, "incompatible_chroma_version", "Archive of another Chroma major"


class QuotaExceededError(AppError):
    status, code, title = 429, "quota_exceeded", "Quota exceeded"


class TooManyRequestsError(AppError):
    """429 with ``Retry-After`` (whole seconds, at least 1)."""

    status, code, title = 429, "too_many_requests", "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, round(retry_after + 0.5)))})


class RateLimitedError(TooManyRequestsError):
    code, title = "rate_limited", "Request rate limit exceeded for this token"


class TooManyAuthFailuresError(TooManyRequestsError):
    code, title = "too_many_auth_failures", "Too many invalid tokens from this address"


class TooManyStartsError(TooManyRequestsError):
    code, title = "too_many_starts", "Too many instances are starting; retry later"


class ServiceUnavailableError(AppError):
    status, code, title = 503, "unavailable", "Temporarily unavailable"


class NoPortAvailableError(Exception):
    """No host port can be reserved for a local server (not an HTTP error: the
    reconciler waits and tries again). Raised by ``db.ports.PortReservationsInDb``
    through the local runtime's ``PortReservations``."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds until a quarantined port of the pool is free again (None: the pool
        is simply full)."""

"""Domain errors and the one handler that renders them as ``application/problem+json``.

Each error class carries its HTTP status and a stable machine-readable ``code``;
``problem_responses`` documents the same classes in OpenAPI.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any, ClassVar

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

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


class QuotaExceededError(AppError):
    status, code, title = 429, "quota_exceeded", "Quota exceeded"


class TooManyRequestsError(AppError):
    """429 with ``Retry-After`` (whole seconds, at least 1)."""

    status, code, title = 429, "too_many_requests", "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, round(retry_after + 0.5)))})


class RateLimitedError(TooManyRequestsError):
    code, title = "rate_limited", "Request rate limit exceeded for this token"


class TooManyStartsError(TooManyRequestsError):
    code, title = "too_many_starts", "Too many instances are starting; retry later"


class ServiceUnavailableError(AppError):
    status, code, title = 503, "unavailable", "Temporarily unavailable"


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=f"https://chroma-orch.dev/problems/{code}",
        title=title,
        status=status,
        code=code,
        detail=detail,
        errors=errors,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_CONTENT_TYPE,
    )


def problem_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the given errors as problems."""
    out: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = out.setdefault(
            error.status,
            {
                "model": Problem,  # registers the schema in components
                "description": error.title,
                "content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}},
            },
        )
        if error.title not in entry["description"]:
            entry["description"] += f"; {error.title}"
        if error.status == 429:
            entry["headers"] = {"Retry-After": _RETRY_AFTER}
    return out


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 1},
}


def _jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type")}
        for err in exc.errors()
    ]


_UNREACHABLE = (
    DisconnectionError,
    PoolTimeoutError,
    asyncpg.exceptions.PostgresConnectionError,  # class 08: the connection does not exist
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 shutdown, 57P03 cannot connect now
)
_CONNECT_CODE = ("sqlalchemy/pool/base.py", "asyncpg/connect_utils.py")


def _raised_while_connecting(exc: BaseException) -> bool:
    """An OSError from opening a database connection (socket gone, refused, timed out),
    not from anything else the request did."""
    return any(
        frame.f_code.co_filename.endswith(_CONNECT_CODE)
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) means PostgreSQL cannot be reached right now."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNREACHABLE):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OSError) and _raised_while_connecting(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def allowed_methods(request: Request) -> list[str]:
    """Every method the API documents at this path (Starlette names only the first
    matching route's methods in a 405). Read from the OpenAPI document, once."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "allow_table", None
    )
    if table is None:
        table = []
        for template, operations in request.app.openapi()["paths"].items():
            pattern = re.sub(r"\{path\}", ".+", template)
            pattern = re.sub(r"\{[^/}]+\}", "[^/]+", pattern)
            table.append((re.compile(f"^{pattern}$"), {m.upper() for m in operations}))
        request.app.state.allow_table = table
    methods: set[str] = set()
    for regex, verbs in table:
        if regex.match(request.url.path):
            methods |= verbs
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return problem_response(exc.status, exc.code, exc.title, exc.detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _jsonable_errors(exc)
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem_response(
            422, "validation_error", ValidationFailedError.title, detail, errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        title = code.replace("_", " ").capitalize()
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(exc.status_code, code, title, str(exc.detail), headers=headers)

    async def _database(_: Request, exc: Exception) -> JSONResponse:
        # Registered per class so ExceptionMiddleware answers: the catch-all below
        # runs in ServerErrorMiddleware, which re-raises and drops the connection.
        if database_unreachable(exc):
            log.warning("database unreachable error=%s", type(exc).__name__)
            return problem_response(
                503,
                ServiceUnavailableError.code,
                ServiceUnavailableError.title,
                "the database is unreachable; retry shortly",
                headers={"Retry-After": "1"},
            )
        log.exception("unhandled error", exc_info=exc)
        return problem_response(500, "internal_error", "Internal error")

    for kind in (SQLAlchemyError, asyncpg.PostgresError, OSError):
        app.add_exception_handler(kind, _database)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(500, "internal_error", "Internal error")

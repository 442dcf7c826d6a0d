"""Renders the service's errors as ``application/problem+json`` and documents them in
OpenAPI; the error classes themselves are in ``chroma_orch.errors``."""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from chroma_orch.db.unreachable import database_unreachable
from chroma_orch.errors import (
    PROBLEM_CONTENT_TYPE,
    AppError,
    Problem,
    ServiceUnavailableError,
    ValidationFailedError,
)

log = logging.getLogger(__name__)

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


def allowed_methods(request: Request) -> list[str]:
    """Every method the API documents at this path (Starlette names only the first
    matching route's methods in a 405); a path documented as it is (``/v1/instances/
    import``) is not also read as a template's (``/v1/instances/{instance_id}``). Read
    from the OpenAPI document, once."""
    table: list[tuple[re.Pattern[str], set[str], bool]] | None = getattr(
        request.app.state, "allow_table", None
    )
    if table is None:
        table = []
        for template, operations in request.app.openapi()["paths"].items():
            pattern = re.sub(r"\{path\}", ".+", template)
            pattern = re.sub(r"\{[^/}]+\}", "[^/]+", pattern)
            verbs = {m.upper() for m in operations}
            table.append((re.compile(f"^{pattern}$"), verbs, "{" not in template))
        request.app.state.allow_table = table
    methods: set[str] = set()
    for regex, verbs, literal in table:
        if regex.match(request.url.path):
            if literal:
                return sorted(verbs)
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

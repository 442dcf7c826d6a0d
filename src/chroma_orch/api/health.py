"""Liveness and readiness probes (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from chroma_orch.api.deps import Context
from chroma_orch.context import AppContext
from chroma_orch.db.migrate import at_head

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="ok, or unavailable (then the answer is a 503).")
    checks: dict[str, str] = Field(
        description=(
            "database, migrations, reconciler, loops (the replica's background loops):"
            " ok, disabled, or what is wrong."
        )
    )


@router.get("/healthz", operation_id="healthz", summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="Ready: database reachable, migrations at head, reconciler making passes",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready; `checks` says what failed"}},
)
async def readyz(ctx: Context) -> JSONResponse:
    checks = {
        "database": await _database(ctx),
        "migrations": "ok" if ctx.migrations_at_head else "not checked",
        "reconciler": _reconciler(ctx),
        "loops": f"crashed: {ctx.loops.failed}" if ctx.loops.failed else "ok",
    }
    if checks["database"] == "ok" and not ctx.migrations_at_head:
        checks["migrations"] = await _migrations(ctx)
    ready = all(value in ("ok", "disabled") for value in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def _database(ctx: AppContext) -> str:
    # No asyncio timeout around the query: cancelling asyncpg mid-operation can leave
    # a pooled connection unusable. The engine's connect timeout bounds the wait.
    try:
        async with ctx.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"; say which
        return f"error: {type(exc).__name__}"
    return "ok"


async def _migrations(ctx: AppContext) -> str:
    try:
        ctx.migrations_at_head = await at_head(ctx.engine)
    except Exception as exc:  # reported, not raised: this is a probe
        return f"error: {type(exc).__name__}"
    return "ok" if ctx.migrations_at_head else "behind: run `chroma-orch migrate`"


def _reconciler(ctx: AppContext) -> str:
    if ctx.reconciler is None:
        return "disabled"
    age = ctx.reconciler.seconds_since_last_pass()
    limit = max(3 * ctx.settings.reconciler.resync_interval, 10.0)
    return "ok" if age < limit else f"stalled: last pass {age:.0f}s ago"

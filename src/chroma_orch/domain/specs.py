"""Resolving a requested spec: the one function every path that writes
``instances.spec`` calls (a launch, a spec change, an upgrade).

The requested fields go over the instance's current spec (a change) or over the
tenant's plan defaults (a launch); the runtime fills in the rest and says what it
cannot run (``SpecSupport.check_spec``); then the plan's allowed ranges; then the
tenant's quota on CPU and memory over its live instances, under a per-tenant lock
held to the end of the transaction (so two requests do not both take the room only
one of them has). docs/specs.md.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    TableValuedAlias,
    Text,
    Uuid,
    column,
    func,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.locks import NamedLock, named_key
from chroma_orch.domain.plans import PlanDefinition, Quota, tenant_plan
from chroma_orch.errors import InvalidSpecError, QuotaExceededError
from chroma_orch.runtimes.base import ServerSpec, SpecSupport, spec_support
from chroma_orch.runtimes.server_settings import settings_problems

_EMPTY_PLAN = PlanDefinition()


def merge_spec(base: Mapping[str, Any], requested: Mapping[str, Any] | None) -> dict[str, Any]:
    """``requested`` over ``base`` (both spec JSON): a field not given (or null) keeps
    the base's; ``settings`` merge key by key, a null value removing the key."""
    merged = {key: value for key, value in base.items() if value is not None}
    for key, value in (requested or {}).items():
        if key == "settings":
            settings = {**(merged.get("settings") or {}), **(value or {})}
            merged["settings"] = {k: v for k, v in settings.items() if v is not None}
        elif value is not None:
            merged[key] = value
    return merged


def _asks_for_something(requested: Mapping[str, Any] | None) -> bool:
    return any(value not in (None, {}) for value in (requested or {}).values())


async def resolve_spec(
    session: AsyncSession,
    runtime: object,
    tenant_id: uuid.UUID,
    requested: Mapping[str, Any] | None,
    current: ServerSpec,
    instance_id: uuid.UUID,
    *,
    default_plan: PlanDefinition | None = None,
) -> ServerSpec:
    """The resolved spec (every field filled) for ``requested`` over ``current``, the
    spec of instance ``instance_id`` (a change; a launch resolves with
    ``resolve_launch``, its statement checking the quota), or ``InvalidSpecError``
    naming every reason, or ``QuotaExceededError``. ``default_plan`` is the plan of
    tenants without one (``settings.specs``; omitted: no defaults, ranges or quota).
    Takes the tenant's spec lock for the rest of the transaction."""
    support = _support(runtime, requested)
    if support is None:  # the runtime runs one spec
        return current
    plan = await tenant_plan(session, tenant_id, default_plan or _EMPTY_PLAN)
    resolved = _resolved(support, plan, current, requested)
    await check_quota(session, tenant_id, plan.quota, resolved, instance_id)
    return resolved


async def resolve_launch(
    session: AsyncSession,
    runtime: object,
    tenant_id: uuid.UUID,
    requested: Mapping[str, Any] | None,
    *,
    default_plan: PlanDefinition | None = None,
) -> tuple[ServerSpec, Quota]:
    """``resolve_spec`` for a new instance, without the lock and the quota check:
    the statement that writes the instance takes the lock and checks the quota
    returned here (``chroma_orch_tenant_usage``, ``quota_problem``), so the lock is
    held only inside PostgreSQL when that statement commits by itself."""
    support = _support(runtime, requested)
    if support is None:
        return ServerSpec(), Quota()
    plan = await tenant_plan(session, tenant_id, default_plan or _EMPTY_PLAN)
    return _resolved(support, plan, None, requested), plan.quota


def _support(runtime: object, requested: Mapping[str, Any] | None) -> SpecSupport | None:
    """The runtime's spec support; None for a runtime that runs one spec, which
    refuses a request that asks for anything."""
    support = spec_support(runtime)
    if support is None and _asks_for_something(requested):
        name = getattr(runtime, "name", "this runtime")
        raise InvalidSpecError(f"the {name} runtime runs every instance on one spec")
    return support


def _resolved(
    support: SpecSupport,
    plan: PlanDefinition,
    current: ServerSpec | None,
    requested: Mapping[str, Any] | None,
) -> ServerSpec:
    """``requested`` over ``current`` (a change) or the plan's defaults (a launch),
    resolved by the runtime and checked against the plan."""
    base = current.to_json() if current is not None else plan.defaults.as_request()
    try:
        wanted = ServerSpec.from_json(merge_spec(base, requested))
    except ValueError as exc:
        raise InvalidSpecError(str(exc)) from exc
    return _checked(support, plan, wanted)


def _checked(support: SpecSupport, plan: PlanDefinition, wanted: ServerSpec) -> ServerSpec:
    """``wanted`` resolved by the runtime, or ``InvalidSpecError`` naming every reason
    the runtime or the plan refuses it."""
    check = support.check_spec(wanted)
    problems = _unique([*check.problems, *settings_problems(wanted.settings)])
    problems += plan.allowed.problems(check.resolved)
    if problems:
        raise InvalidSpecError("; ".join(problems))
    return check.resolved


async def resolve_version(
    session: AsyncSession,
    runtime: object,
    tenant_id: uuid.UUID,
    current: ServerSpec,
    chroma_version: str,
    *,
    default_plan: PlanDefinition | None = None,
) -> tuple[ServerSpec, ServerSpec]:
    """``current`` as the runtime runs it, and the same on ``chroma_version``, checked
    by the runtime and the tenant's plan (``InvalidSpecError``). A new version needs no
    room in the quota (the size stays): no lock is taken."""
    support = spec_support(runtime)
    if support is None:
        name = getattr(runtime, "name", "this runtime")
        raise InvalidSpecError(f"the {name} runtime runs one Chroma version only")
    plan = await tenant_plan(session, tenant_id, default_plan or _EMPTY_PLAN)
    resolved = support.check_spec(current).resolved
    return resolved, _checked(
        support, plan, dataclasses.replace(resolved, chroma_version=chroma_version)
    )


async def check_room(
    session: AsyncSession,
    runtime: object,
    tenant_id: uuid.UUID,
    spec: ServerSpec,
    *,
    default_plan: PlanDefinition | None = None,
) -> None:
    """``QuotaExceededError`` unless the tenant's plan has room for one more live
    instance of ``spec`` as it is (an undelete). Takes the tenant's spec lock."""
    if spec_support(runtime) is None:
        return
    plan = await tenant_plan(session, tenant_id, default_plan or _EMPTY_PLAN)
    await check_quota(session, tenant_id, plan.quota, spec, None)


def stored_spec(runtime: object, spec: ServerSpec) -> ServerSpec:
    """A stored spec as the runtime runs it (a row from before specs is all None:
    the runtime's defaults)."""
    support = spec_support(runtime)
    return spec if support is None else support.check_spec(spec).resolved


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def spec_lock_key(tenant_id: uuid.UUID) -> str:
    """The key of the tenant's spec lock, as ``chroma_orch_tenant_usage`` is given it."""
    return named_key(NamedLock.TENANT_SPECS, tenant_id)


def tenant_usage(*arguments: ColumnElement[Any]) -> TableValuedAlias:
    """The tenant's live instances (``desired_state <> 'deleted'``) and the CPU and
    memory their specs ask for, as a ``FROM`` item: ``chroma_orch_tenant_usage(tenant,
    spec lock key[, except_instance])`` (migrations 0022, 0023), which first takes
    the tenant's spec lock, then counts in a snapshot of its own, so it sees every
    launch or spec change committed before the lock was granted. The one definition
    of a tenant's usage: the launch's admission and ``check_quota`` both read it."""
    return (
        func.chroma_orch_tenant_usage(*arguments)
        .table_valued(
            column("live_instances", BigInteger),
            column("cpu_used", BigInteger),
            column("memory_used", BigInteger),
        )
        .render_derived(name="usage")
    )


async def check_quota(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    quota: Quota,
    spec: ServerSpec,
    instance_id: uuid.UUID | None,
) -> None:
    """``QuotaExceededError`` when the tenant's live instances (but ``instance_id``)
    and ``spec`` together have more CPU or memory than ``quota``. Takes the tenant's
    spec lock for the rest of the transaction, quota or not."""
    usage = tenant_usage(
        literal(tenant_id, Uuid),
        literal(spec_lock_key(tenant_id), Text),
        literal(instance_id, Uuid),
    )
    row = (await session.execute(select(usage.c.cpu_used, usage.c.memory_used))).one()
    problem = quota_problem(quota, spec, cpu_used=row[0], memory_used=row[1])
    if problem is not None:
        raise QuotaExceededError(problem)


def quota_problem(quota: Quota, spec: ServerSpec, *, cpu_used: int, memory_used: int) -> str | None:
    """Why ``spec`` does not fit in ``quota`` beside what the tenant's live
    instances use (None: it fits)."""
    for used, asked, limit, unit in (
        (cpu_used, spec.cpu, quota.cpu, "CPU units"),
        (memory_used, spec.memory_mib, quota.memory_mib, "MiB of memory"),
    ):
        if limit is not None and used + (asked or 0) > limit:
            return (
                f"the tenant's live instances would have {used + (asked or 0)} {unit}; "
                f"its plan's quota is {limit} ({used} in use)"
            )
    return None

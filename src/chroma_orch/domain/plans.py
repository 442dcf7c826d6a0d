"""Plans: the spec a tenant's instances get by default, the ranges a spec may take, and
the tenant's quota on CPU and memory over all its live instances (docs/specs.md).

A plan is a row of ``plans`` (its ``definition`` is a ``PlanDefinition`` as JSON); a
tenant without one (``tenants.plan`` NULL) has the service's default plan, built from
``settings.specs``. Services only flush; the caller commits.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import ColumnElement, Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db.driver import driver
from chroma_orch.db.locks import NamedLock, lock
from chroma_orch.db.models import Plan, Tenant
from chroma_orch.db.statements import compiled
from chroma_orch.domain.principal import Principal
from chroma_orch.errors import NotFoundError, PlanInUseError
from chroma_orch.runtimes.base import Architecture, ServerSpec
from chroma_orch.settings import SpecsSettings

PlanName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"),
    Field(description="Lower-case letters, digits and . _ -, 1-63 characters.", examples=["pro"]),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpecDefaults(_Strict):
    """The spec a new instance gets for each field its request leaves out."""

    cpu: int | None = Field(None, ge=1, description="CPU units (1024 = 1 vCPU).")
    memory_mib: int | None = Field(None, ge=1, description="Memory in MiB.")
    architecture: Architecture | None = Field(None, description="CPU architecture.")
    chroma_version: str | None = Field(None, max_length=64, description="Chroma version.")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Chroma server settings (the whitelist)."
    )

    def as_request(self) -> dict[str, Any]:
        """The defaults as a spec request (only the fields set)."""
        raw = self.model_dump(mode="json", exclude_none=True)
        if not raw.get("settings"):
            raw.pop("settings", None)
        return raw


def _range(low_high: tuple[int, int] | None, what: str) -> None:
    if low_high is not None and low_high[0] > low_high[1]:
        raise ValueError(f"allowed.{what}: the minimum is above the maximum")


class AllowedRanges(_Strict):
    """What a spec may ask for; null: anything the runtime runs."""

    cpu: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = Field(
        None, description="[min, max] CPU units."
    )
    memory_mib: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = Field(
        None, description="[min, max] MiB of memory."
    )
    chroma_versions: list[str] | None = Field(None, description="Chroma versions.")
    architectures: list[Architecture] | None = Field(None, description="CPU architectures.")
    settings: list[str] | None = Field(None, description="Server settings a spec may set.")

    @model_validator(mode="after")
    def _ordered(self) -> AllowedRanges:
        _range(self.cpu, "cpu")
        _range(self.memory_mib, "memory_mib")
        return self

    def problems(self, spec: ServerSpec) -> list[str]:
        """Why the plan does not allow ``spec`` (resolved); empty: it does."""
        found = []
        for what, value, bounds, unit in (
            ("cpu", spec.cpu, self.cpu, " CPU units"),
            ("memory_mib", spec.memory_mib, self.memory_mib, " MiB"),
        ):
            if bounds is not None and value is not None and not bounds[0] <= value <= bounds[1]:
                found.append(
                    f"{what} {value}{unit} is outside the plan's range [{bounds[0]}, {bounds[1]}]"
                )
        if self.chroma_versions is not None and spec.chroma_version not in self.chroma_versions:
            allowed = ", ".join(self.chroma_versions) or "none"
            found.append(f"Chroma {spec.chroma_version} is not in the plan (allowed: {allowed})")
        if self.architectures is not None and spec.architecture not in self.architectures:
            found.append(f"architecture {spec.architecture} is not in the plan")
        if self.settings is not None:
            found += [
                f"settings.{key} is not a setting the plan lets a spec set"
                for key in spec.settings
                if key not in self.settings
            ]
        return found


class Quota(_Strict):
    """The most a tenant's live instances may have in total; null: no limit."""

    cpu: int | None = Field(None, ge=1, description="CPU units over all live instances.")
    memory_mib: int | None = Field(None, ge=1, description="MiB over all live instances.")


class PlanDefinition(_Strict):
    """``plans.definition``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "defaults": {"memory_mib": 1024, "chroma_version": "1.5.9"},
                    "allowed": {"memory_mib": [512, 4096], "chroma_versions": ["1.5.9"]},
                    "quota": {"memory_mib": 8192},
                }
            ]
        },
    )

    defaults: SpecDefaults = Field(default_factory=SpecDefaults)
    allowed: AllowedRanges = Field(default_factory=AllowedRanges)
    quota: Quota = Field(default_factory=Quota)


class PlanRead(BaseModel):
    name: str
    definition: PlanDefinition
    tenants: int = Field(description="Tenants whose plan it is.")


def default_plan(specs: SpecsSettings) -> PlanDefinition:
    """The plan of tenants without one: ``settings.specs``."""
    return PlanDefinition(
        defaults=SpecDefaults(
            cpu=specs.cpu,
            memory_mib=specs.memory_mib,
            architecture=None if specs.architecture is None else Architecture(specs.architecture),
            chroma_version=specs.chroma_version,
            settings=specs.server_settings,
        ),
        allowed=AllowedRanges.model_validate(
            {
                "cpu": specs.allowed_cpu,
                "memory_mib": specs.allowed_memory_mib,
                "chroma_versions": specs.allowed_chroma_versions,
                "architectures": specs.allowed_architectures,
                "settings": specs.allowed_settings,
            }
        ),
        quota=Quota(cpu=specs.quota_cpu, memory_mib=specs.quota_memory_mib),
    )


async def tenant_plan(
    session: AsyncSession, tenant_id: uuid.UUID, default: PlanDefinition
) -> PlanDefinition:
    """The plan of ``tenant_id``: its own, else ``default``; a read that begins no
    transaction."""
    found = await _PLAN_OF.fetchval(await driver(session, begin=False), tenant_id=tenant_id)
    return default if found is None else PlanDefinition.model_validate(found)


def _plan_of(tenant: ColumnElement[bool]) -> Select[tuple[Any]]:
    return select(Plan.definition).join(Tenant, Tenant.plan == Plan.name).where(tenant)


_PLAN_OF = compiled("tenant_plan", _plan_of(Tenant.id == bindparam("tenant_id")))


async def require_plan(session: AsyncSession, name: str) -> None:
    """``NotFoundError`` unless plan ``name`` exists; locked until the transaction ends
    (a tenant given it and the plan's deletion wait for each other)."""
    if await session.get(Plan, name, with_for_update=True) is None:
        raise NotFoundError(f"plan {name!r} not found")


class PlanService:
    """Admin CRUD of plans."""

    def __init__(self, session: AsyncSession, principal: Principal):
        self.session = session
        self.principal = principal

    async def put(self, name: str, definition: PlanDefinition) -> PlanRead:
        self.principal.require_admin()
        await lock(self.session, NamedLock.PLAN, name)
        plan = await self.session.get(Plan, name)
        raw = definition.model_dump(mode="json")
        if plan is None:
            self.session.add(Plan(name=name, definition=raw))
        else:
            plan.definition = raw
        await self.session.flush()
        return await self.get(name)

    async def get(self, name: str) -> PlanRead:
        self.principal.require_admin()
        plan = await self.session.get(Plan, name)
        if plan is None:
            raise NotFoundError(f"plan {name!r} not found")
        return PlanRead(name=plan.name, definition=plan.definition, tenants=await self._users(name))

    async def all(self) -> list[PlanRead]:
        self.principal.require_admin()
        users = func.count(Tenant.id)
        rows = await self.session.execute(
            select(Plan, users).outerjoin(Tenant, Tenant.plan == Plan.name).group_by(Plan.name)
            .order_by(Plan.name)
        )  # fmt: skip
        return [
            PlanRead(name=plan.name, definition=plan.definition, tenants=count)
            for plan, count in rows.all()
        ]

    async def delete(self, name: str) -> None:
        """Delete a plan no tenant has (409 ``plan_in_use`` else)."""
        self.principal.require_admin()
        await lock(self.session, NamedLock.PLAN, name)
        plan = await self.session.get(Plan, name, with_for_update=True)
        if plan is None:
            raise NotFoundError(f"plan {name!r} not found")
        if users := await self._users(name):
            raise PlanInUseError(f"plan {name!r} is the plan of {users} tenant(s)")
        await self.session.delete(plan)
        await self.session.flush()

    async def _users(self, name: str) -> int:
        count = await self.session.scalar(
            select(func.count()).select_from(Tenant).where(Tenant.plan == name)
        )
        return int(count or 0)

"""InstanceService and TenantService driven directly, on a real database: the rules
the routers rely on (scoping, quotas, idempotency, no-op actions), without HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chroma_orch.db.models import Event, Intent, IntentStatus
from chroma_orch.db.session import create_engine, create_session_factory
from chroma_orch.domain.instances import InstancePolicy, InstanceService
from chroma_orch.domain.principal import SYSTEM, TENANT_SCOPE, Principal
from chroma_orch.domain.schemas import InstanceCreate, TenantCreate
from chroma_orch.domain.states import Action, DesiredState, Phase
from chroma_orch.domain.tenants import TenantService
from chroma_orch.errors import (
    ConflictError,
    ForbiddenError,
    IdempotencyKeyReusedError,
    NotFoundError,
    QuotaExceededError,
)

POLICY = InstancePolicy(runtime="local", max_per_tenant=2)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield create_session_factory(engine)
    await engine.dispose()


async def _tenant(sessions: async_sessionmaker[AsyncSession], name: str) -> Principal:
    async with sessions() as session:
        tenant = await TenantService(session, SYSTEM).create(TenantCreate(name=name))
        await session.commit()
    return Principal(token_id=uuid.uuid4(), tenant_id=tenant.id, scopes=(TENANT_SCOPE,))


async def _count(session: AsyncSession, model: type[Intent] | type[Event], **where: object) -> int:
    clauses = [getattr(model, column) == value for column, value in where.items()]
    return int(await session.scalar(select(func.count()).select_from(model).where(*clauses)) or 0)


async def test_create_writes_instance_intent_and_event_in_one_go(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    acme = await _tenant(sessions, "acme")
    async with sessions() as session:
        instance, intent = await InstanceService(session, acme, POLICY).create(
            InstanceCreate(name="main")
        )
        await session.commit()
        assert (instance.phase, instance.desired_state) == (Phase.PENDING, DesiredState.RUNNING)
        assert (intent.action, intent.status) == (Action.CREATE, IntentStatus.PENDING)
        assert await _count(session, Event, instance_id=instance.id) == 1
        with pytest.raises(ConflictError):
            await InstanceService(session, acme, POLICY).create(InstanceCreate(name="main"))


async def test_quota_and_tenant_scoping(sessions: async_sessionmaker[AsyncSession]) -> None:
    acme, other = await _tenant(sessions, "acme"), await _tenant(sessions, "other")
    async with sessions() as session:
        service = InstanceService(session, acme, POLICY)
        first, _ = await service.create(InstanceCreate(name="a"))
        await service.create(InstanceCreate(name="b"))
        await session.commit()
        with pytest.raises(QuotaExceededError):
            await service.create(InstanceCreate(name="c"))
    async with sessions() as session:
        stranger = InstanceService(session, other, POLICY)
        with pytest.raises(NotFoundError):
            await stranger.get(first.id)
        with pytest.raises(NotFoundError):
            await stranger.act(first.id, Action.DELETE)
        with pytest.raises(ForbiddenError):  # an admin names the tenant it acts for
            await InstanceService(session, SYSTEM, POLICY).create(InstanceCreate(name="x"))


async def test_idempotency_key_replays_the_same_request_only(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    acme = await _tenant(sessions, "acme")
    async with sessions() as session:
        service = InstanceService(session, acme, POLICY)
        first, _ = await service.create(InstanceCreate(name="a"), idempotency_key="k1")
        await session.commit()
        again, _ = await service.create(InstanceCreate(name="a"), idempotency_key="k1")
        assert again.id == first.id
        with pytest.raises(IdempotencyKeyReusedError):
            await service.create(InstanceCreate(name="other"), idempotency_key="k1")


async def test_a_repeated_action_writes_no_new_intent(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    acme = await _tenant(sessions, "acme")
    async with sessions() as session:
        service = InstanceService(session, acme, POLICY)
        instance, _ = await service.create(InstanceCreate(name="a"))
        await session.commit()
        stopped, stop = await service.act(instance.id, Action.STOP)
        await session.commit()
        assert (stopped.desired_state, stopped.generation) == (DesiredState.STOPPED, 2)
        _, repeat = await service.act(instance.id, Action.STOP)
        await session.commit()
        assert repeat.id == stop.id
        assert await _count(session, Intent, instance_id=instance.id) == 2  # create, stop
        await service.act(instance.id, Action.DELETE)
        await session.commit()
        _, deleted_again = await service.act(instance.id, Action.DELETE)  # idempotent
        assert deleted_again.action == Action.DELETE

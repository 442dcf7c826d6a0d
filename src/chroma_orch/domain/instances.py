"""Instance lifecycle requests: validate, write desired state and an intent, queue events.

The API side of the state model. Nothing here talks to a runtime: the
reconciler acts on what is written. Services only flush; the caller commits.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    ColumnElement,
    Integer,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession

from chroma_orch.db import rows
from chroma_orch.db.hub import EventHub, wait_for_event
from chroma_orch.db.locks import NamedLock, lock
from chroma_orch.db.models import OPEN_INTENT, Instance, Intent, IntentStatus, Tenant
from chroma_orch.db.outbox import INTENTS_CHANNEL, event_row
from chroma_orch.domain.instance_search import list_page
from chroma_orch.domain.limits import (
    ON_THEIR_WAY_UP,
    check_concurrent_starts,
    enforce_start_cap,
)
from chroma_orch.domain.plans import PlanDefinition, Quota
from chroma_orch.domain.principal import Principal
from chroma_orch.domain.schemas import (
    EndpointRead,
    FailureRead,
    InstanceCreate,
    InstancePage,
    InstanceRead,
    InstanceUpdate,
    SpecRead,
)
from chroma_orch.domain.snapshot_access import restorable_snapshot
from chroma_orch.domain.specs import (
    check_room,
    merge_spec,
    quota_problem,
    resolve_launch,
    resolve_spec,
    spec_lock_key,
    stored_spec,
    tenant_usage,
)
from chroma_orch.domain.states import (
    ACTION_TARGETS,
    Action,
    DesiredState,
    Phase,
    changes_desired,
    check_action,
)
from chroma_orch.domain.status import endpoint_of, failure_of, start_phase_of, start_phases_of
from chroma_orch.errors import (
    ConflictError,
    IdempotencyKeyReusedError,
    NotFoundError,
    QuotaExceededError,
    UpgradeInProgressError,
)
from chroma_orch.runtimes.base import ServerSpec


@dataclass(frozen=True)
class InstancePolicy:
    runtime: str
    max_per_tenant: int
    public_url: str | None = None
    max_concurrent_starts: int = 100
    """Base URL of the data plane; None while no data plane serves instances."""
    default_plan: PlanDefinition = field(default_factory=PlanDefinition)
    """The plan of tenants without one (``settings.specs``)."""


def is_gone(instance: Instance) -> bool:
    """Deleted and meant to stay so: hidden unless asked for. An undeleted instance
    (desired running, phase still deleted until the reconciler brings it back) is live."""
    return instance.phase == Phase.DELETED and instance.desired_state == DesiredState.DELETED


def to_read(instance: Instance, policy: InstancePolicy) -> InstanceRead:
    endpoint, failure = None, None
    if (address := endpoint_of(instance)) is not None:
        host, port = address
        endpoint = EndpointRead(host=host, port=port, url=f"http://{host}:{port}")
    if (failed := failure_of(instance)) is not None:
        failure = FailureRead(reason=failed[0], message=failed[1])
    return InstanceRead(
        id=instance.id,
        name=instance.name,
        tenant_id=instance.tenant_id,
        runtime=instance.runtime,
        desired_state=DesiredState(instance.desired_state),
        phase=Phase(instance.phase),
        generation=instance.generation,
        observed_generation=instance.observed_generation,
        endpoint=endpoint,
        url=f"{policy.public_url}/i/{instance.id}" if policy.public_url else None,
        failure=failure,
        restart_count=instance.restart_count,
        idle_timeout_seconds=instance.idle_timeout_seconds,
        wake_on_request=instance.wake_on_request,
        last_activity_at=instance.last_activity_at,
        culled_at=instance.culled_at,
        created_at=instance.created_at,
        updated_at=instance.updated_at,
        phase_changed_at=instance.phase_changed_at,
        start_phase=start_phase_of(instance),
        start_phases=start_phases_of(instance),
        spec=SpecRead.model_validate(ServerSpec.from_json(instance.spec).to_json()),
        labels=instance.labels or {},
        upgrade_id=instance.upgrade_id,
    )


def _change_params(changes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``changes`` (from ``_change``) as ``rows.add_intent``'s change parameters."""
    if changes is None:
        return None
    params = {k: v for k, v in changes.items() if k != "generation"}
    return params | {"new_generation": changes["generation"]}


def desired_snapshot(instance: Instance) -> dict[str, object]:
    return {"desired_state": instance.desired_state, "generation": instance.generation}


def _intent_values(
    tenant_id: uuid.UUID,
    action: Action,
    generation: int,
    converged: bool,
    idempotency_key: str | None,
    fingerprint: str | None,
) -> dict[str, Any]:
    """A new intent's columns; one already converged is written as succeeded."""
    return {
        "tenant_id": tenant_id,
        "action": action.value,
        "target_generation": generation,
        "status": IntentStatus.SUCCEEDED if converged else IntentStatus.PENDING,
        "completed_at": datetime.now(UTC) if converged else None,
        "idempotency_key": idempotency_key,
        "request_hash": fingerprint,
        "attempts": 0,
    }


def request_fingerprint(
    data: InstanceCreate, tenant_id: uuid.UUID, upload_sha256: str | None = None
) -> str:
    """What an Idempotency-Key is bound to: the request's body (an import's archive by
    its checksum) and the tenant."""
    body = {**data.model_dump(mode="json"), "tenant_id": str(tenant_id)}
    for name, unset in (("spec", None), ("labels", {})):  # keys bound before they existed
        if body.get(name) == unset:
            del body[name]
    if upload_sha256 is not None:
        body["upload_sha256"] = upload_sha256
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


_LIVE = and_(
    Instance.tenant_id == bindparam("tenant_id"),
    Instance.desired_state != DesiredState.DELETED.value,
)
_COUNTS = (
    select(
        func.count().filter(_LIVE, Instance.name == bindparam("name")).label("same_name"),
        func.count().filter(ON_THEIR_WAY_UP).label("starts"),
    )
    .where(or_(_LIVE, ON_THEIR_WAY_UP))
    .subquery("counts")
)
_USAGE = tenant_usage(bindparam("tenant_id"), bindparam("spec_lock", type_=Text))
"""The tenant's live instances and their CPU and memory, counted after its spec
lock was taken (``tenant_usage``): what the statement's own snapshot, taken before
any wait for the lock, would miss."""


def _fits(used: ColumnElement[int], field: str) -> ColumnElement[bool]:
    limit = bindparam(f"quota_{field}", type_=Integer)
    return or_(limit.is_(None), used + bindparam(f"asked_{field}", type_=Integer) <= limit)


_ADMIT = select(
    _COUNTS,
    _USAGE.c.live_instances.label("tenant_count"),
    _USAGE.c.cpu_used,
    _USAGE.c.memory_used,
    and_(
        _COUNTS.c.same_name == 0,
        _USAGE.c.live_instances < bindparam("max_per_tenant", type_=Integer),
        _fits(_USAGE.c.cpu_used, "cpu"),
        _fits(_USAGE.c.memory_used, "memory_mib"),
        _COUNTS.c.starts < bindparam("max_starts", type_=Integer),
    ).label("admitted"),
).select_from(_COUNTS.join(_USAGE, true()))
"""A new instance needs a free name, room in the tenant's count and its plan's
quota, and room under the service-wide cap on starts; one query answers all."""
_CREATE = rows.create_instance_statement("create_instance", _ADMIT)
_RACE_RETRIES = 5
_WAIT_FOR_UPGRADE = frozenset({Action.STOP, Action.RESTART, Action.RESTORE, Action.START})
"""Changes refused while the instance is being upgraded (a delete cancels the upgrade)."""


def _refuse_while_upgrading(instance: Instance, action: Action) -> None:
    if instance.upgrade_id is not None and action in _WAIT_FOR_UPGRADE:
        raise UpgradeInProgressError(
            f"instance {instance.id} is being upgraded (upgrade {instance.upgrade_id}): "
            f"{action.value} it once the upgrade has ended, or delete it"
        )


def _name_taken(name: str) -> ConflictError:
    return ConflictError(f"tenant already has an instance named {name!r}")


def _refuse(
    counts: Mapping[str, Any], name: str, policy: InstancePolicy, quota: Quota, spec: ServerSpec
) -> None:
    """Raise the error that explains why ``_ADMIT`` refused."""
    if counts["same_name"]:
        raise _name_taken(name)
    if counts["tenant_count"] >= policy.max_per_tenant:
        raise QuotaExceededError(
            f"tenant has {counts['tenant_count']} instances; the limit is {policy.max_per_tenant}"
        )
    problem = quota_problem(
        quota, spec, cpu_used=counts["cpu_used"], memory_used=counts["memory_used"]
    )
    if problem is not None:
        raise QuotaExceededError(problem)
    enforce_start_cap(counts["starts"], policy.max_concurrent_starts)


def _change(
    action: Action,
    instance: Instance,
    keep_data: bool,
    culled_at: datetime | None = None,
    restore_from: uuid.UUID | None = None,
    upgrade_id: uuid.UUID | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply a request that changes the desired state to ``instance``: the columns
    it writes, and its event."""
    before = desired_snapshot(instance)
    generation = instance.generation + 1
    changes: dict[str, Any] = {
        "desired_state": ACTION_TARGETS[action].value,
        "generation": generation,
        "culled_at": culled_at,  # None: a request from a person, not idle any more
    }
    if action in (Action.RESTART, Action.RESTORE, Action.UNDELETE):
        changes["restart_generation"] = generation
    if action in (Action.START, Action.RESTART, Action.RESTORE, Action.UNDELETE):
        changes["restart_count"] = 0
    if action in (Action.RESTORE, Action.UNDELETE) and restore_from is not None:
        # (an undelete on the data its delete kept loads none)
        changes["restore_snapshot_id"] = restore_from
        changes["restore_generation"] = generation
    if action is Action.DELETE:
        changes["keep_data"] = keep_data
        changes["data_kept_for_undelete"] = False  # the delete's reconciler decides anew
    if action is Action.UPGRADE:  # the reconciler restarts once it has the probe's baseline
        changes["upgrade_id"] = upgrade_id
        changes["restart_count"] = 0
    return changes, _desired_changed(instance, changes, before, {"action": action.value})


def _desired_changed(
    instance: Instance,
    changes: Mapping[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
    shown: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Apply ``changes`` to ``instance``; its ``instance.desired_changed`` event (``after``
    with the new desired state, and the ``shown`` columns)."""
    for attribute, value in changes.items():
        setattr(instance, attribute, value)
    after = {**after, **desired_snapshot(instance)}
    after |= {column: getattr(instance, column) for column in shown}
    return event_row(
        type="instance.desired_changed",
        instance_id=instance.id,
        tenant_id=instance.tenant_id,
        before=before,
        after=after,
    )


def _reconfigure(instance: Instance, spec: ServerSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new spec for ``instance``: the columns it writes (the desired state kept; a
    restart on it when the server should run), and its event."""
    before = {**desired_snapshot(instance), "spec": instance.spec}
    generation = instance.generation + 1
    running = instance.desired_state == DesiredState.RUNNING.value
    changes: dict[str, Any] = {
        "desired_state": instance.desired_state,
        "generation": generation,
        "culled_at": instance.culled_at,  # still culled: a wake-on-request still wakes it
        "spec": spec.to_json(),
    }
    if running:
        changes |= {"restart_generation": generation, "restart_count": 0}
    after = {"action": Action.RECONFIGURE.value}
    return changes, _desired_changed(instance, changes, before, after, ("spec",))


class InstanceService:
    def __init__(
        self,
        session: AsyncSession,
        principal: Principal,
        policy: InstancePolicy,
        runtime: object | None = None,
    ):
        self.session = session
        self.principal = principal
        self.policy = policy
        self.runtime = runtime
        """What checks specs (``runtimes.base.spec_support``); None: one spec only."""

    async def get(
        self, instance_id: uuid.UUID, *, for_update: bool = False, deleted: bool = False
    ) -> Instance:
        """A visible instance, or ``NotFoundError``; one already deleted only with
        ``deleted`` (so that repeating a delete answers like the first one)."""
        instance = await rows.fetch_instance(self.session, instance_id, for_update=for_update)
        if (
            instance is None
            or not self.principal.can_see(instance.tenant_id)
            or (is_gone(instance) and not deleted)
        ):
            raise NotFoundError(f"instance {instance_id} not found")
        return instance

    async def wait(
        self, instance_id: uuid.UUID, phase: Phase, timeout: float, hub: EventHub
    ) -> Instance:
        """The instance once it reached ``phase`` for its current generation, failed,
        or ``timeout`` passed. Holds no connection while waiting."""
        deadline = time.monotonic() + timeout
        answers = (phase.value, Phase.FAILED.value, Phase.DELETED.value)  # others: keep waiting
        with hub.watch(str(instance_id), answers) as changed:
            while True:
                instance = await self.get(instance_id)
                settled = instance.observed_generation == instance.generation
                reached = settled and instance.phase in (phase, Phase.FAILED)
                remaining = deadline - time.monotonic()
                if reached or remaining <= 0:
                    return instance
                await self.session.commit()  # give the connection back while waiting
                await wait_for_event(changed, remaining)

    async def find_live(self, tenant_id: uuid.UUID, name: str) -> Instance | None:
        return await self.session.scalar(
            select(Instance).where(
                Instance.tenant_id == tenant_id,
                Instance.name == name,
                Instance.desired_state != DesiredState.DELETED,
            )
        )

    async def create(
        self,
        data: InstanceCreate,
        idempotency_key: str | None = None,
        *,
        instance_id: uuid.UUID | None = None,
        upload_sha256: str | None = None,
    ) -> tuple[Instance, Intent]:
        """A new instance (``instance_id`` when given: an import names its archive by it
        first), or the one an earlier request with ``idempotency_key`` created."""
        tenant_id = self.principal.tenant_scope(data.tenant_id)
        if self.principal.is_admin:  # a tenant token's own tenant exists (tokens cascade)
            await self._require_tenant(tenant_id)
        fingerprint = request_fingerprint(data, tenant_id, upload_sha256)
        if idempotency_key is not None:
            replay = await self._replay(tenant_id, idempotency_key, fingerprint)
            if replay is not None:
                return replay
        restore_from = None
        if data.from_snapshot is not None:  # a clone: the snapshot's data, then a start
            source = await restorable_snapshot(
                self.session, self.principal, data.from_snapshot, tenant_id
            )
            restore_from = source.id
        requested = None if data.spec is None else data.spec.requested()
        spec, quota = await resolve_launch(
            self.session,
            self.runtime,
            tenant_id,
            requested,
            default_plan=self.policy.default_plan,
        )
        instance_id = instance_id or uuid.uuid4()
        desired = {"desired_state": DesiredState.RUNNING.value, "generation": 1}
        created = event_row(
            type="instance.created",
            instance_id=instance_id,
            tenant_id=tenant_id,
            after={"name": data.name, "phase": Phase.PENDING.value, **desired},
        )
        limits = [self.policy.max_per_tenant, self.policy.max_concurrent_starts]
        try:
            counts, written = await rows.insert_instance(
                self.session,
                _CREATE,
                {
                    "id": instance_id,
                    "tenant_id": tenant_id,
                    "name": data.name,
                    "runtime": self.policy.runtime,
                    "spec": spec.to_json(),
                    "labels": data.labels,
                    "phase": Phase.PENDING.value,
                    **desired,
                    "observed_generation": 0,
                    "restart_generation": 0,
                    "restart_count": 0,
                    "error_count": 0,
                    "keep_data": False,
                    "idle_timeout_seconds": data.idle_timeout_seconds,
                    "wake_on_request": data.wake_on_request,
                    "restore_snapshot_id": restore_from,
                    "restore_generation": desired["generation"] if restore_from else None,
                },
                _intent_values(tenant_id, Action.CREATE, 1, False, idempotency_key, fingerprint),
                admission={
                    "max_per_tenant": limits[0],
                    "max_starts": limits[1],
                    "spec_lock": spec_lock_key(tenant_id),
                    "quota_cpu": quota.cpu,
                    "asked_cpu": spec.cpu or 0,
                    "quota_memory_mib": quota.memory_mib,
                    "asked_memory_mib": spec.memory_mib or 0,
                },
                events=[created],
                notify={INTENTS_CHANNEL: str(instance_id)},
            )
        except asyncpg.UniqueViolationError as exc:  # created at the same moment
            raise _name_taken(data.name) from exc
        if written is None:
            _refuse(counts, data.name, self.policy, quota, spec)
        assert written is not None
        return written

    async def act(
        self, instance_id: uuid.UUID, action: Action, *, keep_data: bool = False
    ) -> tuple[Instance, Intent]:
        """Apply start/stop/restart/delete: new desired state, an intent, an event.
        Delete is idempotent: a retried delete of a deleted instance answers 202 again."""
        deleted = action is Action.DELETE
        for _ in range(_RACE_RETRIES):  # optimistic: the write checks the generation read
            instance = await self.get(instance_id, deleted=deleted)
            applied = await self.apply(instance, action, keep_data=keep_data)
            if applied is not None:
                return applied
        raise ConflictError("the instance kept changing while this request was applied")

    async def apply(
        self,
        instance: Instance,
        action: Action,
        *,
        keep_data: bool = False,
        culled_at: datetime | None = None,
        restore_from: uuid.UUID | None = None,
        upgrade_id: uuid.UUID | None = None,
        anew: bool = False,
    ) -> tuple[Instance, Intent] | None:
        """Write the action's desired state, intent and event, in one statement, if
        ``instance`` is still at the generation it was read at (else None). A repeat
        (it changes nothing) writes no intent: it is answered with the one its
        generation has, still open, or settled once the instance got there.
        ``anew``: a new request (a new generation) even where it asks for the desired
        state the instance has (a purge of a deleted instance whose data may stay)."""
        desired, phase = DesiredState(instance.desired_state), Phase(instance.phase)
        check_action(action, desired, phase)
        generation = instance.generation
        changes: dict[str, Any] | None = None
        events = []
        if anew or changes_desired(action, desired, phase):
            _refuse_while_upgrading(instance, action)
            if action in (Action.START, Action.RESTART, Action.UNDELETE):
                await check_concurrent_starts(self.session, self.policy.max_concurrent_starts)
            changes, event = _change(
                action, instance, keep_data, culled_at, restore_from, upgrade_id
            )
            events.append(event)
        converged = changes is None and instance.observed_generation >= instance.generation
        target = instance.generation  # the new one, for a change
        values = _intent_values(instance.tenant_id, action, target, converged, None, None)
        intent = await rows.add_intent(
            self.session,
            {"instance_id": instance.id, **values},
            generation=generation,
            # Due again even for a repeat: if the reconciler is finishing this very
            # instance, it must come back for an intent its last write did not see.
            change=_change_params(changes),
            due=not converged,
            events=events,
            notify={} if converged else {INTENTS_CHANNEL: str(instance.id)},
            reuse=() if changes else tuple(IntentStatus) if converged else OPEN_INTENT,
        )
        return None if intent is None else (instance, intent)

    async def update(self, instance_id: uuid.UUID, data: InstanceUpdate) -> Instance:
        """Change settings that need no restart (idle timeout, wake-on-request, labels)
        and the spec (a new generation when the resolved spec changes)."""
        if data.spec is not None:  # the tenant's spec lock before the row's
            visible = await self.get(instance_id)
            await lock(self.session, NamedLock.TENANT_SPECS, visible.tenant_id)
        instance = await self.get(instance_id, for_update=True)
        changes = {
            field: value
            for field, value in data.model_dump(exclude_unset=True).items()
            if not (field in ("wake_on_request", "labels") and value is None) and field != "spec"
        }
        if changes:
            await rows.update_settings(
                self.session,
                instance.id,
                changes.get("idle_timeout_seconds", rows.KEEP),
                changes.get("wake_on_request", rows.KEEP),
                changes.get("labels", rows.KEEP),
            )
            for field, value in changes.items():
                setattr(instance, field, value)
        if data.spec is not None:
            await self._reconfigure(instance, data.spec.requested())
        return instance

    async def check_room(self, instance: Instance) -> None:
        """``QuotaExceededError`` unless the tenant's plan has room for ``instance``
        live again (an undelete); takes the tenant's spec lock (before any row lock)."""
        spec = ServerSpec.from_json(instance.spec)
        await check_room(
            self.session,
            self.runtime,
            instance.tenant_id,
            spec,
            default_plan=self.policy.default_plan,
        )

    async def _reconfigure(self, instance: Instance, requested: Mapping[str, Any]) -> None:
        """Write ``requested`` merged onto the spec of ``instance`` (locked), a new
        generation with a ``reconfigure`` intent if the resolved spec changed."""
        if instance.upgrade_id is not None:
            raise UpgradeInProgressError(
                f"instance {instance.id} is being upgraded ({instance.upgrade_id}); "
                "change its spec once the upgrade is over"
            )
        check_action(
            Action.RECONFIGURE, DesiredState(instance.desired_state), Phase(instance.phase)
        )
        current = ServerSpec.from_json(instance.spec)
        if ServerSpec.from_json(merge_spec(current.to_json(), requested)) == current:
            return  # asks for what it has: no new generation
        spec = await resolve_spec(
            self.session,
            self.runtime,
            instance.tenant_id,
            requested,
            current,
            instance.id,
            default_plan=self.policy.default_plan,
        )
        if spec == stored_spec(self.runtime, current):
            return
        generation = instance.generation
        changes, event = _reconfigure(instance, spec)
        values = _intent_values(
            instance.tenant_id, Action.RECONFIGURE, instance.generation, False, None, None
        )
        intent = await rows.add_intent(
            self.session,
            {"instance_id": instance.id, **values},
            generation=generation,
            change=_change_params(changes),
            due=True,
            events=[event],
            notify={INTENTS_CHANNEL: str(instance.id)},
        )
        if intent is None:  # the row is locked: cannot happen, unless the lock was lost
            raise ConflictError("the instance changed while its spec was changed")

    async def list(
        self,
        *,
        phase: Phase | None,
        tenant_id: uuid.UUID | None,
        limit: int,
        cursor: str | None,
        deleted: bool = False,
        search: str | None = None,
    ) -> InstancePage:
        """The live instances (``deleted``: the deleted ones, still undeletable), one
        page with the event log's ``seq`` (``domain/instance_search.py``)."""
        seq, rows, next_cursor = await list_page(
            self.session,
            self.principal,
            phase=phase,
            tenant_id=tenant_id,
            search=search,
            limit=limit,
            cursor=cursor,
            deleted=deleted,
        )
        return InstancePage(
            items=[to_read(row, self.policy) for row in rows], next_cursor=next_cursor, seq=seq
        )

    async def _replay(
        self, tenant_id: uuid.UUID, key: str, fingerprint: str
    ) -> tuple[Instance, Intent] | None:
        await lock(self.session, NamedLock.IDEMPOTENCY, tenant_id, key)
        intent = await self.session.scalar(
            select(Intent).where(Intent.tenant_id == tenant_id, Intent.idempotency_key == key)
        )
        if intent is None:
            return None
        if intent.request_hash != fingerprint:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was already used with a different request body"
            )
        instance = await self.session.get_one(Instance, intent.instance_id)
        return instance, intent

    async def _require_tenant(self, tenant_id: uuid.UUID) -> None:
        found = await self.session.scalar(select(Tenant.id).where(Tenant.id == tenant_id))
        if found is None:
            raise NotFoundError(f"tenant {tenant_id} not found")

"""Transaction-level advisory locks: every key this service locks, and the two
ways it takes one.

Each lock is released when the transaction that took it ends, so none outlives
a unit of work (a crashed replica's locks go with its connection). Keys are
bigints: a job that one replica at a time runs has a fixed key (``LockKey``,
eight ASCII letters read as a number); a lock per thing (a tenant's name, an
idempotency key) is a ``NamedLock`` and its parts, hashed by PostgreSQL. The
values must not change between releases: replicas of two releases running side
by side must still exclude each other.
"""

from __future__ import annotations

import enum

from sqlalchemy import BigInteger, Text, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


@enum.unique
class LockKey(enum.IntEnum):
    """Locks held by the one replica doing a job; another one skips it."""

    EVENTS = 0x63686F7265766E74
    """"chorevnt": taken inside every statement that appends events (``db/outbox.py``,
    waiting for it), so sequence numbers become visible in commit order."""
    OBSERVER = 0x63686F6F62737276
    """"choobsrv": the reconciler's liveness pass (``reconciler/loop.py``)."""
    HEARTBEAT = 0x63686F6872746274
    """"chohrtbt": the reconciler's heartbeat pass (``reconciler/heartbeat.py``)."""
    CULLER = 0x63686F63756C6C72
    """"chocullr": the idle culler's pass (``reconciler/culler.py``)."""
    RETENTION = 0x63686F7075726765
    """"chopurge": each batch of the retention pass (``db/retention.py``)."""
    SCHEDULER = 0x63686F7363686564
    """"chosched": each batch of the snapshot scheduler (``reconciler/snapshot_scheduler.py``)."""


@enum.unique
class NamedLock(enum.StrEnum):
    """Locks that serialise writers of one thing; the others wait their turn."""

    MIGRATE = "migrate"
    """Migrating the schema (``db/migrate.py``)."""
    ADMIN_TOKEN = "admin-token"
    """Making sure an admin token exists (``domain/tenants.py``)."""
    TENANT = "tenant"
    """Creating a tenant, with its name as the part: one of two same-named wins."""
    IDEMPOTENCY = "idempotency"
    """Answering a request's idempotency key, with the tenant id and the key."""
    PLAN = "plan"
    """Writing or deleting a plan, with its name as the part (``domain/plans.py``)."""
    TENANT_SPECS = "tenant-specs"
    """Resolving a spec against the tenant's quota, with the tenant id as the part
    (``domain/specs.py``): two launches or spec changes of one tenant do not both fit
    in the room only one of them has. Taken before any instance row lock."""


_TRY = select(func.pg_try_advisory_xact_lock(bindparam("key", type_=BigInteger)))
_TAKE = select(func.pg_advisory_xact_lock(func.hashtextextended(bindparam("name", type_=Text), 0)))


async def try_lock(db: AsyncSession | AsyncConnection, key: LockKey) -> bool:
    """Take ``key`` for the rest of ``db``'s transaction (begun if need be) if no
    one holds it. False when another transaction does."""
    return bool(await db.scalar(_TRY, {"key": int(key)}))


async def lock(db: AsyncSession | AsyncConnection, name: NamedLock, *parts: object) -> None:
    """Take ``name`` (of ``parts``) for the rest of ``db``'s transaction, waiting
    while another transaction holds it."""
    await db.execute(_TAKE, {"name": named_key(name, *parts)})


def named_key(name: NamedLock, *parts: object) -> str:
    """The text hashed into the lock's key: ``name:part:part``."""
    return ":".join((name.value, *(str(part) for part in parts)))

"""What the lifespan builds and request handlers use, kept on ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chroma_orch.db.hub import EventHub
from chroma_orch.domain.instances import InstancePolicy
from chroma_orch.domain.limits import AuthFailures, RateLimiter
from chroma_orch.domain.snapshots import SnapshotPolicy
from chroma_orch.domain.token_cache import TokenCache
from chroma_orch.events.guard import SocketGuard
from chroma_orch.events.stream import EventStream
from chroma_orch.loops import Loops
from chroma_orch.runtimes.base import Runtime
from chroma_orch.settings import Settings
from chroma_orch.snapshots.store import SnapshotStore


class Liveness(Protocol):
    """What the readiness probe asks of this replica's reconciler (the doors do not
    import the reconciler)."""

    def seconds_since_last_pass(self) -> float: ...


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    runtime: Runtime
    policy: InstancePolicy
    hub: EventHub
    rate_limiter: RateLimiter
    tokens: TokenCache
    auth_failures: AuthFailures
    loops: Loops
    """Every background loop of this replica (one TaskGroup)."""
    stream: EventStream
    guard: SocketGuard
    snapshot_policy: SnapshotPolicy
    store: SnapshotStore
    """Where snapshot archives are kept (exports stream from it)."""
    reconciler: Liveness | None = None
    migrations_at_head: bool = False

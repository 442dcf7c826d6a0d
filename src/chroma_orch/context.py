"""What the lifespan builds and request handlers use, kept on ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chroma_orch.domain.instances import InstancePolicy
from chroma_orch.domain.limits import AuthFailures, RateLimiter
from chroma_orch.domain.token_cache import TokenCache
from chroma_orch.events.hub import EventHub
from chroma_orch.runtimes.base import Runtime
from chroma_orch.settings import Settings

if TYPE_CHECKING:
    from chroma_orch.reconciler.loop import Reconciler


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
    reconciler: Reconciler | None = None
    migrations_at_head: bool = False

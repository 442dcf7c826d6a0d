"""``create_app(settings)``: the lifespan owns every resource on one exit stack."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from chroma_orch import __version__, dashboard, dataplane, process_tuning
from chroma_orch.api import dataplane as dataplane_api
from chroma_orch.api import events as events_api
from chroma_orch.api import (
    fleet,
    health,
    instances,
    metrics,
    plans,
    rollouts,
    seed,
    snapshot_schedules,
    snapshots,
    tenants,
    upgrades,
)
from chroma_orch.api.problems import install_error_handlers
from chroma_orch.context import AppContext
from chroma_orch.db.embedded import EmbeddedPostgres
from chroma_orch.db.hub import EventHub
from chroma_orch.db.listener import PgListener
from chroma_orch.db.migrate import upgrade
from chroma_orch.db.outbox import EVENTS_CHANNEL, INTENTS_CHANNEL, commit
from chroma_orch.db.ports import PortReservationsInDb, port_pool
from chroma_orch.db.rate_buckets import AccountRateLimitsInDb
from chroma_orch.db.retention import Retention
from chroma_orch.db.session import create_engine, create_session_factory
from chroma_orch.db.statements import check_engine
from chroma_orch.db.task_states import TaskStatesInDb
from chroma_orch.domain.instances import InstancePolicy
from chroma_orch.domain.limits import AuthFailures, RateLimiter
from chroma_orch.domain.plans import default_plan
from chroma_orch.domain.snapshot_store import build_store
from chroma_orch.domain.snapshots import snapshot_policy
from chroma_orch.domain.tenants import ensure_admin_token
from chroma_orch.domain.token_cache import HEARD_WITHIN, TOKENS_CHANNEL, TokenCache
from chroma_orch.events import guard, stream
from chroma_orch.loops import Loops
from chroma_orch.reconciler.culler import cull_idle
from chroma_orch.reconciler.kept_data_expiry import KeptDataExpiry
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.reconciler.rollout_members import upgrades_with
from chroma_orch.reconciler.rollouts import RolloutRunner
from chroma_orch.reconciler.snapshot_scheduler import SnapshotScheduler
from chroma_orch.runtimes.base import Preflight, RuntimeServices, can_snapshot
from chroma_orch.runtimes.factory import build_runtime
from chroma_orch.runtimes.instrumented import InstrumentedRuntime
from chroma_orch.settings import Settings
from chroma_orch.telemetry.log_setup import configure_logging_unless_configured
from chroma_orch.telemetry.middleware import RequestContextMiddleware

log = logging.getLogger(__name__)

DESCRIPTION = """\
Gives every tenant its own isolated Chroma server and manages its lifecycle.
Lifecycle requests are accepted (202) and carried out by the reconciler;
watch `phase` and `observed_generation` to see them happen.
Authenticate with `Authorization: Bearer <token>` (admin or tenant token).
Errors are `application/problem+json` with a stable `code`.
"""


async def start_embedded_database(settings: Settings, stack: AsyncExitStack) -> str:
    cluster = EmbeddedPostgres(
        settings.data_dir / "postgres",
        bin_dir=settings.embedded_db.bin_dir,
        system_user=settings.embedded_db.system_user,
        database=settings.embedded_db.database,
        upgrade_from_bin_dir=settings.embedded_db.upgrade_from_bin_dir,
    )
    await asyncio.to_thread(cluster.start)
    stack.push_async_callback(asyncio.to_thread, cluster.stop)
    await asyncio.to_thread(cluster.ensure_database, settings.embedded_db.database)
    return cluster.url


def announce_admin_token(secret: str) -> None:
    """Show a newly generated admin token once, on the console (never in logs)."""
    sys.stderr.write(
        "\n  A new admin token was generated. It is shown only this once:\n\n"
        f"      {secret}\n\n"
        "  Use it as `Authorization: Bearer <token>`.\n\n"
    )
    sys.stderr.flush()


async def bootstrap_admin(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    configured = settings.admin_token.get_secret_value() if settings.admin_token else None
    async with sessions() as session:
        secret = await ensure_admin_token(session, configured)
        await commit(session)
    if secret:
        announce_admin_token(secret)
    elif not configured:
        sys.stderr.write(
            "  Admin token: the one shown when this data directory was first used "
            "(`chroma-orch rotate-admin-token` issues a new one).\n"
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging_unless_configured(settings.log_level, settings.log_format)
    async with AsyncExitStack() as stack:
        url = settings.database_url or await start_embedded_database(settings, stack)
        engine = create_engine(
            url,
            application_name=settings.reconciler.replica_id,
            pool_size=settings.database_pool_size,
        )
        stack.push_async_callback(engine.dispose)
        if settings.migrate_on_start:
            await upgrade(engine)
            await check_engine(engine)  # every statement fits the schema, or fail now
        sessions = create_session_factory(engine)
        await bootstrap_admin(sessions, settings)
        ports = PortReservationsInDb(sessions, port_pool(settings))
        loops = Loops()
        services = RuntimeServices(
            ports=ports,
            rate_limits=AccountRateLimitsInDb(sessions),
            task_states=TaskStatesInDb(sessions),
            background=loops.add,
        )
        runtime = InstrumentedRuntime(build_runtime(settings, services))
        stack.push_async_callback(runtime.aclose)
        if isinstance(runtime.inner, Preflight):
            await runtime.inner.preflight()  # e.g. the ECS start-up check
        policy = InstancePolicy(
            runtime=settings.runtime,
            max_per_tenant=settings.max_instances_per_tenant,
            public_url=settings.base_url if settings.proxy.enabled else None,
            max_concurrent_starts=settings.limits.max_concurrent_starts,
            default_plan=default_plan(settings.specs),
        )
        store = build_store(settings)
        hub = EventHub()
        limiter = RateLimiter(settings.limits.requests_per_second, settings.limits.burst)
        listener = PgListener(url, settings.reconciler.replica_id)
        tokens = TokenCache(
            settings.token_cache_ttl,
            10_000,
            lambda: listener.heard(within=HEARD_WITHIN),
            refused_ttl=settings.refused_token_ttl,
        )
        failures = AuthFailures(settings.limits.auth_failures, settings.limits.auth_failure_window)
        listener.subscribe(TOKENS_CHANNEL, tokens.on_notify)
        listener.subscribe(EVENTS_CHANNEL, hub.notify)
        ctx = AppContext(
            settings,
            engine,
            sessions,
            runtime,
            policy,
            hub,
            limiter,
            tokens,
            failures,
            loops,
            stream=await stream.start(sessions, settings.events, loops, listener),
            guard=guard.start(sessions, settings.events.max_sockets_per_token, loops, listener),
            snapshot_policy=snapshot_policy(settings, can_snapshot=can_snapshot(runtime)),
            store=store,
        )
        ctx.migrations_at_head = settings.migrate_on_start
        app.state.ctx = ctx
        dataplane.start(app, ctx, stack, loops)
        if app.state.retention_loop:
            retention = Retention(sessions, settings.retention, settings.events.retention_hours)
            expiry = KeptDataExpiry(
                sessions, policy, ctx.snapshot_policy, settings.retention.deleted_instances_hours
            )

            async def retain() -> None:
                try:  # first: a row goes once its kept data is purged
                    await expiry.run_once()
                finally:  # (an expiry that failed does not hold up the rest)
                    await retention.run_once()

            loops.every("retention", retain, settings.retention.interval)
        if settings.reconciler.enabled:
            work_engine = create_engine(
                url,
                application_name=settings.reconciler.replica_id,
                pool_size=settings.reconciler.concurrency + 4,  # its passes, and the loops'
                durable_commits=False,
                pre_ping=False,
            )
            stack.push_async_callback(work_engine.dispose)
            reconciler = Reconciler(
                create_session_factory(work_engine), runtime, settings, store=store
            )
            listener.subscribe(INTENTS_CHANNEL, reconciler.wake)
            reconciler.register(loops)
            stack.push_async_callback(reconciler.abandon)
            app.state.reconciler = ctx.reconciler = reconciler
            culling = settings.culling

            async def cull() -> None:
                await cull_idle(sessions, policy, culling.default_idle_timeout)

            loops.every("culler", cull, culling.interval)
            scheduler = SnapshotScheduler(
                sessions, policy, ctx.snapshot_policy, settings.snapshots.schedule_batch
            )
            loops.every(
                "snapshot_scheduler", scheduler.run_once, settings.snapshots.schedule_interval
            )
            upgrades = upgrades_with(policy, ctx.snapshot_policy)
            rollout_runner = RolloutRunner(
                sessions, policy, runtime, upgrades, settings.rollouts.batch
            )
            loops.every("rollouts", rollout_runner.run_once, settings.rollouts.interval)
        loops.add("listener", listener.run)
        await stack.enter_async_context(loops)  # left first: every loop stops before the rest
        await asyncio.wait_for(listener.connected.wait(), timeout=30)
        log.info(
            "service ready runtime=%s replica=%s", runtime.name, settings.reconciler.replica_id
        )
        with process_tuning.frozen_startup_heap():
            yield


def create_app(settings: Settings | None = None, *, retention_loop: bool = True) -> FastAPI:
    """The service's app; ``retention_loop=False`` (tests only: the service never passes
    it) leaves out the retention loop, whose first pass runs at start."""
    settings = settings or Settings()
    traced = settings.opentelemetry
    app = FastAPI(
        title="chroma-orch",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry={"tracing": traced, "metrics": traced, "logs": traced, "operation_spans": traced},
    )
    app.state.settings = settings
    app.state.retention_loop = retention_loop
    install_error_handlers(app)
    # The data plane first: /i/... is the hot path and is matched before anything else.
    # The routers' routes are complete where they are declared (prefix, tags, responses
    # applied), so the app takes them as they are: include_router would wrap them in
    # per-app copies whose models FastAPI builds again on each new app's first request.
    # (So app.dependency_overrides does not reach them; nothing here overrides one.)
    routers = (
        dataplane_api,
        instances,
        snapshots,
        snapshot_schedules,
        upgrades,
        tenants,
        rollouts,
        plans,
        seed,
        health,
        metrics,
        fleet,
        events_api,
    )
    for module in routers:
        app.router.routes.extend(module.router.routes)
    dashboard.mount(app)
    app.add_middleware(RequestContextMiddleware)
    if settings.trusted_proxies:  # the client a trusted proxy forwards for, else the peer
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app

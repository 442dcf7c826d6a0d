"""Shared fixtures: one real PostgreSQL cluster per run, a fresh database per test
cloned from a migrated template, settings tuned for fast tests.

``CHROMA_ORCH_TEST_DATABASE_URL`` (an admin URL, e.g. ``postgresql+asyncpg://postgres@/postgres?host=/run/postgresql``)
points the suite at an external server instead of the embedded cluster.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import shutil
import tempfile
import types
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import httpx
import pytest
from _pytest.mark.expression import Expression
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from chroma_orch.app import create_app
from chroma_orch.db.embedded import EmbeddedPostgres
from chroma_orch.db.listener import asyncpg_dsn
from chroma_orch.db.migrate import upgrade
from chroma_orch.db.session import create_engine
from chroma_orch.settings import (
    LimitsSettings,
    LocalRuntimeSettings,
    ReconcilerSettings,
    Settings,
)
from tests.databases import DatabasePool

if TYPE_CHECKING:
    from tests.e2e.service import Service

ADMIN_TOKEN = "co_test-admin-token-0123456789abcdefghijklmnop"
IN_CI = bool(os.environ.get("CHROMA_ORCH_CI"))


# Test tiers (pyproject registers the markers; README "Development" explains them).
# Every collected test gets exactly one, from where it lives and what it uses:
# chaos: under tests/chaos; e2e: under tests/e2e or tests/fuzz, or it (a fixture it
# requests, or a tests/ helper either calls) starts real services: the service as a
# child process, Nginx, Chromium, moto's server, or Chroma servers through the local
# runtime (tests starting PostgreSQL clusters of their own say e2e themselves); db: it
# needs PostgreSQL (the run's cluster, or EmbeddedPostgres objects it does not start); unit:
# the rest. A tier marker written on a test wins over the derived one; in a directory
# of one tier (TIER_BY_DIRECTORY) it may only repeat that tier (tests/test_tiers.py),
# since `-m` leaves such a directory uncollected when it excludes the tier.
TIERS = ("unit", "db", "e2e", "chaos")
TESTS_DIR = Path(__file__).parent
TIER_BY_DIRECTORY = {"chaos": "chaos", "e2e": "e2e", "fuzz": "e2e"}
STARTS_SERVICES = frozenset(
    {
        "running_service",
        "Service",
        "running_nginx",
        "async_playwright",
        "ThreadedMotoServer",
        "LocalRuntime",
    }
)
USES_POSTGRES = frozenset({"pg_cluster", "EmbeddedPostgres"})


def _in_tests(function: types.FunctionType) -> bool:
    """Whether ``function`` is the tests' own (test modules outside a package are
    imported under their bare names, so this goes by file, not module name)."""
    return Path(function.__code__.co_filename).is_relative_to(TESTS_DIR)


def names_used(functions: Iterable[object]) -> set[str]:
    """Global names the functions' code refers to, following the tests' own helpers."""
    names: set[str] = set()
    pending = [inspect.unwrap(f) for f in functions if callable(f)]
    seen: set[types.CodeType] = set()
    while pending:
        function = pending.pop()
        code = getattr(function, "__code__", None)
        if code is None or code in seen:
            continue
        seen.add(code)
        own: set[str] = set()
        codes = [code]
        while codes:  # the function's own code and that of functions defined in it
            current = codes.pop()
            own.update(current.co_names)
            codes.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
        names |= own
        scope = getattr(function, "__globals__", {})
        # Its own names, in its own module (another function's names there may mean
        # something else: a helper `service` of a test module is not conftest's fixture),
        # unwrapped: a helper under @asynccontextmanager is contextlib's until unwrapped.
        helpers = (inspect.unwrap(scope[name]) for name in own if callable(scope.get(name)))
        pending.extend(h for h in helpers if inspect.isfunction(h) and _in_tests(h))
    return names


def tier_of(item: pytest.Item) -> str:
    """The tier derived for a test (see TIERS above)."""
    if item.path.is_relative_to(TESTS_DIR):
        directory = item.path.relative_to(TESTS_DIR).parts[0]
        if directory in TIER_BY_DIRECTORY:
            return TIER_BY_DIRECTORY[directory]
    functions: list[object] = [getattr(item, "obj", None)]
    if isinstance(item, pytest.Function):
        definitions = item._fixtureinfo.name2fixturedefs.values()
        functions += [d.func for defs in definitions for d in defs]
    used = names_used(functions) | set(getattr(item, "fixturenames", ()))
    if used & STARTS_SERVICES:
        return "e2e"
    return "db" if used & USES_POSTGRES else "unit"


COLLECTED_TIERS = pytest.StashKey[dict[str, list[str]]]()

# Modules whose tests take seconds each (they make and upgrade clusters of their own):
# run first, so that under xdist no worker is left running them alone at the end.
SLOW_FIRST = ("db/test_pg_upgrade.py", "db/test_embedded.py")


def _slow_first(item: pytest.Item) -> int:
    where = (
        item.path.relative_to(TESTS_DIR).as_posix() if item.path.is_relative_to(TESTS_DIR) else ""
    )
    return SLOW_FIRST.index(where) if where in SLOW_FIRST else len(SLOW_FIRST)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A directory all of whose tests have one tier (TIER_BY_DIRECTORY) is not even
    imported when ``-m`` leaves that tier out: `make test-fast` would deselect every
    test in it, after paying for importing them (moto, Playwright, schemathesis).
    tests/test_tiers.py checks that no marker written in such a directory says otherwise."""
    tier = TIER_BY_DIRECTORY.get(collection_path.name)
    if tier is None or collection_path.parent != TESTS_DIR or not config.option.markexpr:
        return None

    def is_tier(name: str, /, **_: str | int | bool | None) -> bool:
        return name == tier

    return None if Expression.compile(config.option.markexpr).evaluate(is_tier) else True


@pytest.hookimpl(tryfirst=True)  # before -m deselects by the markers given here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(m.name in TIERS for m in item.iter_markers()):
            item.add_marker(tier_of(item))
    items.sort(key=_slow_first)  # stable: the same order on every xdist worker
    # Every collected test's tiers, deselected ones too, for tests/test_tiers.py.
    config.stash[COLLECTED_TIERS] = {
        item.nodeid: [m.name for m in item.iter_markers() if m.name in TIERS] for item in items
    }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI every test must really run: a skip (say, for a missing nginx or
    chromium, which .ci/run installs) fails the run instead."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where everything must run: {report.longrepr}"


MEMORY_DIR = Path("/dev/shm")
MEMORY_DIR_MIN_FREE = 2 * 1024**3
"""A container's /dev/shm is often 64 MiB: too small for a cluster and its databases."""


def memory_dir() -> Path | None:
    """/dev/shm when it is a writable directory (a tmpfs on Linux) with 2 GiB free,
    else None.

    The run's throwaway cluster lives there: every database test creates a database
    from the migrated template and drops it (hundreds of files each), and on this
    machine's ext4 disk (mounted with discard) a CREATE DATABASE took 50-500 ms and
    most of a core in kernel time, against about 10 ms on tmpfs."""
    if not (MEMORY_DIR.is_dir() and os.access(MEMORY_DIR, os.W_OK | os.X_OK)):
        return None
    space = os.statvfs(MEMORY_DIR)
    return MEMORY_DIR if space.f_bavail * space.f_frsize >= MEMORY_DIR_MIN_FREE else None


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    """A temporary directory every user can search down to (0711), as root, in memory
    where it can be (memory_dir: the service's embedded clusters and the Chroma servers'
    SQLite files write there).

    A root service runs its Chroma servers as an unprivileged user, who opens its data
    directory by path (what an operator's CHROMA_ORCH_DATA_DIR needs as well).
    pytest's own directories cannot serve: every pytest session that starts resets
    /tmp/pytest-of-root to 0700, which would cut the servers of a run still going off
    their files (SQLite then reports the database as moved)."""
    memory = memory_dir()
    if os.geteuid() != 0 and memory is None:
        yield tmp_path
        return
    # one per user: a directory another user made there could not be made 0711
    top = (memory or Path(tempfile.gettempdir())) / f"chroma-orch-tests-{os.geteuid()}"
    top.mkdir(mode=0o711, exist_ok=True)
    top.chmod(0o711)
    private = Path(tempfile.mkdtemp(prefix=f"{tmp_path.name}-", dir=top))
    private.chmod(0o711)
    yield private
    shutil.rmtree(private, ignore_errors=True)


def require_program(name: str) -> str:
    """The path of a system program a test needs; skips (fails in CI) without it."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return path


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def _admin_execute(admin_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[EmbeddedPostgres | None]:
    """The run's embedded cluster, in memory where it can be (memory_dir); None when
    an external server is used."""
    if os.environ.get("CHROMA_ORCH_TEST_DATABASE_URL"):
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="co-test-pg-", dir=memory_dir() or "/tmp"))
    root.chmod(0o711)
    # A throwaway cluster need not survive a machine crash: without fsync, initdb,
    # creating each test's database from the template and every commit stop waiting on disk.
    cluster = EmbeddedPostgres(root / "cluster", database="postgres", durable_init=False)
    cluster.start()
    asyncio.run(
        _admin_execute(
            cluster.admin_url,
            "ALTER SYSTEM SET fsync = off",
            "ALTER SYSTEM SET synchronous_commit = off",
            "ALTER SYSTEM SET full_page_writes = off",
            "SELECT pg_reload_conf()",
        )
    )
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url(pg_cluster: EmbeddedPostgres | None) -> str:
    if pg_cluster is None:
        return os.environ["CHROMA_ORCH_TEST_DATABASE_URL"]
    return pg_cluster.admin_url


async def _build_template(admin_url: str, name: str) -> None:
    await _admin_execute(
        admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
    )
    engine = create_engine(with_database(admin_url, name))
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    name = f"co_template_{os.getpid()}"
    asyncio.run(_build_template(pg_admin_url, name))
    yield name
    asyncio.run(_admin_execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def test_databases(pg_admin_url: str, template_db: str) -> Iterator[DatabasePool]:
    pool = DatabasePool(pg_admin_url, template_db)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
async def database_url(pg_admin_url: str, test_databases: DatabasePool) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    name = await test_databases.take()
    yield with_database(pg_admin_url, name)
    test_databases.drop(name)


def port_window(size: int = 200) -> str:
    low = random.randrange(20000, 29000 - size)
    return f"{low}-{low + size - 1}"


def make_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    """Settings for a service on ``database_url``, a clone of the migrated template
    (or None: an embedded cluster of the data directory's own, migrated at start).

    On a clone the app's start-up migration would find nothing to do and cost each
    test ~0.35 s (the migration lock, Alembic's environment, the statement check):
    it starts as a service run with ``migrate_on_start`` off does, whose readiness
    probe checks the head itself. The statement check has tests/db/test_query_layer.py,
    and the e2e tier's services migrate at start."""
    values: dict[str, object] = {
        "database_url": database_url,
        "migrate_on_start": database_url is None,
        "data_dir": data_dir,
        "admin_token": ADMIN_TOKEN,
        "local": LocalRuntimeSettings(
            port_range=port_window(), start_timeout=30, stop_grace=5, launch_budget=3
        ),
        "limits": LimitsSettings(
            requests_per_second=10_000,
            burst=10_000,
            max_concurrent_starts=10_000,
            auth_failures=10_000,
        ),
        "reconciler": ReconcilerSettings(
            lease_seconds=5,
            resync_interval=0.5,
            observe_interval=0.2,
            backoff_base=0.05,
            backoff_max=0.5,
        ),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data")


@pytest.fixture
def api_settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for API-only tests: no reconciler acts on what they write."""
    return make_settings(
        database_url, tmp_path / "data", reconciler=ReconcilerSettings(enabled=False)
    )


@pytest.fixture
async def api_app(api_settings: Settings) -> AsyncIterator[FastAPI]:
    """The app, without the retention loop: its first pass, at start, ran beside every
    API test for nothing (tests/db/test_retention.py and the tests that purge run
    passes of their own)."""
    app = create_app(api_settings, retention_loop=False)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(api_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as http:
        yield http


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    """The real service under uvicorn, with real Chroma servers (tests/e2e/service.py)."""
    from tests.e2e.service import running_service  # it imports this module

    async with running_service(database_url, tmp_path / "data") as svc:
        yield svc

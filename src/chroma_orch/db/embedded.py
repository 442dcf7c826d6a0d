"""An embedded PostgreSQL cluster owned by the service, driven from its binaries.

Layout under ``cluster_dir``: ``data/`` (the cluster), ``run/`` (Unix socket directory;
under /tmp when that path would be too long for a socket), ``postgres.log`` and ``.lock``.
The server listens on its Unix socket only, with trust authentication for user
``postgres``. A postmaster left running by a killed service is adopted by the next
``start()``. All methods block (subprocesses): call them via ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import String, bindparam, column, select, table

from chroma_orch.db.pg_host import (
    CONF_NAME,
    MAX_SOCKET_PATH,
    PORT,
    READY_TIMEOUT,
    SOCKET_NAME,
    EmbeddedDatabaseError,
    PidFile,
    conf_string,
    find_pg_bin_dir,
    is_executable,
    is_our_postmaster,
    quote_ident,
    read_pid_file,
    upgrade_source_candidates,
)
from chroma_orch.db.pg_upgrade import MajorUpgrade, finish_interrupted_upgrade
from chroma_orch.db.statements import compiled
from chroma_orch.system_user import (
    RunAs,
    SystemUserError,
    can_traverse,
    own_tree,
    resolve_system_user,
)

__all__ = ["EmbeddedDatabaseError", "EmbeddedPostgres", "find_pg_bin_dir"]

logger = logging.getLogger(__name__)

_PG_DATABASE = table("pg_database", column("datname", String))
_DATABASE_NAMED = compiled(
    "database_named",
    select(_PG_DATABASE.c.datname).where(_PG_DATABASE.c.datname == bindparam("name", type_=String)),
)


class EmbeddedPostgres:
    """A PostgreSQL cluster under ``cluster_dir``, run from the binaries in ``bin_dir``.

    When the process is root, the cluster runs as ``system_user`` (created if missing,
    ``nobody`` if it cannot be). ``database`` is the database ``url`` points at. A cluster
    of an older major version is upgraded in place (``pg_upgrade``) with that version's
    binaries from ``upgrade_from_bin_dir`` or the places ``upgrade_source_candidates``
    lists; one of a newer version, or with no such binaries, is refused untouched.
    ``durable_init=False`` lets initdb skip its final fsync of the new cluster's files:
    for throwaway clusters (tests) that need not survive a machine crash.
    """

    def __init__(
        self,
        cluster_dir: Path,
        *,
        bin_dir: Path | None = None,
        system_user: str = "chroma-orch",
        database: str = "chroma_orch",
        upgrade_from_bin_dir: Path | None = None,
        durable_init: bool = True,
    ) -> None:
        self.cluster_dir = Path(os.path.realpath(Path(cluster_dir).expanduser()))
        self.bin_dir = find_pg_bin_dir(bin_dir)
        self.system_user = system_user
        self.database = database
        self.upgrade_from_bin_dir = upgrade_from_bin_dir
        self.durable_init = durable_init
        self.data_dir = self.cluster_dir / "data"
        self.log_file = self.cluster_dir / "postgres.log"
        self.socket_dir = self._choose_socket_dir()
        self._run_as_cache: RunAs | None = None

    # ----------------------------------------------------------------- public API
    @property
    def url(self) -> str:
        """SQLAlchemy URL of ``database`` over the Unix socket."""
        return self.url_for(self.database)

    @property
    def admin_url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` maintenance database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of any database of this cluster."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql+asyncpg://postgres@/{quote(database, safe='')}?host={host}"

    def start(self) -> None:
        """Initialize the cluster if needed and make sure its postmaster is running.

        Idempotent; adopts a postmaster left behind by a killed process.
        """
        try:
            self._prepare_dirs()
        except OSError as exc:
            raise EmbeddedDatabaseError(
                f"cannot prepare {self.cluster_dir}: {exc}; set CHROMA_ORCH_DATA_DIR to a "
                "directory this service may create (e.g. /var/lib/chroma-orch)"
            ) from exc
        with self._locked():
            self._ensure_initialized()
            self._write_conf()
            self._chown_tree()
            info = self._running_postmaster()
            if info is not None and info.socket_dir != str(self.socket_dir):
                logger.info("restarting postgres pid=%s socket_dir=%s", info.pid, info.socket_dir)
                self._pg_ctl_stop()
                info = None
            if info is not None and self._wait_ready(info.pid):
                logger.info("adopted postgres pid=%s data_dir=%s", info.pid, self.data_dir)
                return
            if info is not None:
                self._running_postmaster()  # it exited while we waited: clear its pid file
            self._pg_ctl_start()

    def stop(self) -> None:
        """Stop the postmaster (fast shutdown). No error when it is not running."""
        if not (self.data_dir / "PG_VERSION").exists():
            return
        with self._locked():
            if self._running_postmaster() is None:
                logger.debug("postgres not running data_dir=%s", self.data_dir)
                return
            self._pg_ctl_stop()

    def ensure_database(self, name: str) -> None:
        """Create database ``name`` unless it exists (the cluster must be running)."""
        if not name or "\0" in name or len(name.encode()) > 63:
            raise ValueError(f"invalid database name {name!r}")
        if is_executable(self.bin_dir / "psql"):
            self._ensure_database_psql(name)
        else:
            asyncio.run(self._ensure_database_asyncpg(name))

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------ filesystem
    def _choose_socket_dir(self) -> Path:
        preferred = self.cluster_dir / "run"
        if len(os.fsencode(preferred / SOCKET_NAME)) <= MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(os.fsencode(self.cluster_dir)).hexdigest()[:16]
        return Path("/tmp") / f"chroma-orch-pg-{digest}"

    @property
    def _run_as(self) -> RunAs | None:
        if os.geteuid() != 0:
            return None
        if self._run_as_cache is None:
            try:
                self._run_as_cache = resolve_system_user(self.system_user)
            except SystemUserError as exc:
                raise EmbeddedDatabaseError(f"cannot run PostgreSQL: {exc}") from exc
        return self._run_as_cache

    def _check_traversable(self, path: Path, what: str) -> None:
        """Every component of ``path`` must be searchable by the PostgreSQL user."""
        for component in [*reversed(path.parents), path]:
            if can_traverse(component, self._run_as):
                continue
            user = self._run_as.name if self._run_as else pwd.getpwuid(os.geteuid()).pw_name
            raise EmbeddedDatabaseError(
                f"{what}: directory {component} is not searchable (x permission) by user "
                f"{user!r}, which runs PostgreSQL; set CHROMA_ORCH_DATA_DIR elsewhere "
                "(e.g. /var/lib/chroma-orch) or grant search permission on it"
            )

    def _prepare_dirs(self) -> None:
        for ancestor in reversed(self.cluster_dir.parents):
            if not ancestor.is_dir():
                with contextlib.suppress(FileExistsError):
                    ancestor.mkdir(mode=0o711)
                    os.chmod(ancestor, 0o711)  # only directories we created; mkdir obeys umask
        self._check_traversable(self.cluster_dir.parent, f"cluster {self.cluster_dir}")
        self._check_traversable(self.bin_dir.resolve(), "PostgreSQL binaries")
        self._own_dir(self.cluster_dir)
        self._own_dir(self.socket_dir)

    def _own_dir(self, path: Path) -> None:
        """Make ``path`` a 0700 directory of the PostgreSQL user; refuse a foreign one."""
        run_as = self._run_as
        owner = run_as.uid if run_as is not None else os.geteuid()
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode):
            raise EmbeddedDatabaseError(f"{path} exists and is not a directory")
        if st.st_uid != owner:
            # root may take over the cluster tree, or a directory root itself created
            if run_as is None or not (st.st_uid == 0 or path.is_relative_to(self.cluster_dir)):
                raise EmbeddedDatabaseError(f"{path} is owned by uid {st.st_uid}, not {owner}")
            os.chown(path, run_as.uid, run_as.gid)
        os.chmod(path, 0o700)

    def _chown_tree(self) -> None:
        if self._run_as is not None:
            own_tree(self.cluster_dir, self._run_as)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize init/start/stop across processes and threads (flock is per open file).

        Children never inherit the descriptor (close_fds), so the postmaster cannot hold it.
        """
        with open(self.cluster_dir / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    # ------------------------------------------------------------ subprocesses
    def run_tool(
        self, args: list[str], *, input: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(HOME=str(self.cluster_dir), LC_ALL="C")
        run_as = self._run_as
        if run_as is not None:
            env.update(USER=run_as.name, LOGNAME=run_as.name)
        return subprocess.run(
            args, input=input, capture_output=True, text=True, env=env, timeout=timeout,
            cwd=self.cluster_dir, umask=0o077,
            user=run_as.uid if run_as else None, group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )  # fmt: skip

    def tool_failure(
        self, what: str, proc: subprocess.CompletedProcess[str]
    ) -> EmbeddedDatabaseError:
        log_tail = ""
        with contextlib.suppress(OSError):
            log_tail = self.log_file.read_text(errors="replace")[-2000:]
        return EmbeddedDatabaseError(
            f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()}"
            + (f"\n--- {self.log_file} (tail) ---\n{log_tail}" if log_tail else "")
        )

    def _binary_major(self, bin_dir: Path | None = None) -> str:
        postgres = (bin_dir or self.bin_dir) / "postgres"
        proc = self.run_tool([str(postgres), "--version"])
        match = re.search(r"\(PostgreSQL\) (\d+)", proc.stdout)
        if proc.returncode != 0 or match is None:
            raise self.tool_failure(f"{postgres} --version", proc)
        return match.group(1)

    # ------------------------------------------------------------ cluster lifecycle
    def _ensure_initialized(self) -> None:
        version_file = self.data_dir / "PG_VERSION"
        binary_major = self._binary_major()
        finish_interrupted_upgrade(self)
        if version_file.exists():
            data_major = version_file.read_text().strip()
            if data_major != binary_major:
                self._upgrade_or_refuse(data_major, binary_major)
            return
        if self.data_dir.exists():
            if any(self.data_dir.iterdir()):
                raise EmbeddedDatabaseError(
                    f"{self.data_dir} is not empty but holds no PostgreSQL cluster (no "
                    "PG_VERSION); move it away"
                )
            self.data_dir.rmdir()
        self._initdb(binary_major)

    def _upgrade_or_refuse(self, data_major: str, binary_major: str) -> None:
        mismatch = (
            f"{self.data_dir} holds a PostgreSQL {data_major} cluster but the binaries "
            f"in {self.bin_dir} are PostgreSQL {binary_major}"
        )
        if not (data_major.isdigit() and int(data_major) < int(binary_major)):
            raise EmbeddedDatabaseError(
                f"{mismatch}: point CHROMA_ORCH_EMBEDDED_DB__BIN_DIR at PostgreSQL "
                f"{data_major} binaries (a cluster is never opened by another major version)"
            )
        old_bin = self._find_binaries_of(data_major)
        if old_bin is None:
            raise EmbeddedDatabaseError(
                f"{mismatch}, and no PostgreSQL {data_major} binaries were found to upgrade "
                f"it with (pg_upgrade); the cluster is left untouched. Make them available: "
                "pip install 'chroma-orch[pg16]' (pgserver, Python <= 3.12) for clusters "
                f"created by earlier chroma-orch versions, apt install postgresql-{data_major}, "
                f"or set CHROMA_ORCH_EMBEDDED_DB__UPGRADE_FROM_BIN_DIR; or serve it as it is "
                f"with CHROMA_ORCH_EMBEDDED_DB__BIN_DIR pointing at PostgreSQL {data_major}"
            )
        self._check_traversable(old_bin.resolve(), f"PostgreSQL {data_major} binaries")
        MajorUpgrade(self, old_bin, data_major, binary_major).run()

    def _find_binaries_of(self, major: str) -> Path | None:
        for candidate in upgrade_source_candidates(major, self.upgrade_from_bin_dir):
            with contextlib.suppress(EmbeddedDatabaseError):
                if self._binary_major(candidate) == major:
                    return candidate
        return None

    def _initdb(self, major: str) -> None:
        staging = self.cluster_dir / "data.initdb"  # renamed into place only when complete
        started = time.monotonic()
        self.initdb_at(staging, *([] if self.durable_init else ["--no-sync"]))
        os.rename(staging, self.data_dir)
        elapsed = time.monotonic() - started
        logger.info(
            "initdb done data_dir=%s version=%s seconds=%.2f", self.data_dir, major, elapsed
        )

    def initdb_at(self, target: Path, *extra: str) -> None:
        """A new cluster in ``target`` (replacing any leftover), with our settings."""
        shutil.rmtree(target, ignore_errors=True)
        proc = self.run_tool([
            str(self.bin_dir / "initdb"), "-D", str(target), "--auth=trust", "-U", "postgres",
            "--encoding=UTF8", "--locale=C", *extra,
        ])  # fmt: skip
        if proc.returncode != 0:
            raise self.tool_failure("initdb", proc)
        with open(target / "postgresql.conf", "a") as conf:
            conf.write(f"\n# Settings managed by chroma-orch\ninclude '{CONF_NAME}'\n")
        self._write_conf(target)

    def _write_conf(self, data_dir: Path | None = None) -> None:
        target = (data_dir or self.data_dir) / CONF_NAME
        content = "\n".join([
            "# Written by chroma-orch at every start; edits are overwritten.",
            "listen_addresses = ''",
            f"port = {PORT}",
            f"unix_socket_directories = {conf_string(str(self.socket_dir))}",
            "unix_socket_permissions = 0700",
            "max_connections = 200",
            "fsync = on",
            "timezone = 'UTC'",
            "log_timezone = 'UTC'",
            "",
        ])  # fmt: skip
        tmp = target.with_suffix(".tmp")
        tmp.write_text(content)
        if self._run_as is not None:
            os.chown(tmp, self._run_as.uid, self._run_as.gid)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)

    def postmaster_running(self) -> bool:
        """Whether our postmaster runs on the data directory (a stale pid file is removed)."""
        return self._running_postmaster() is not None

    def shut_down_with(self, bin_dir: Path) -> None:
        """Stop the cluster cleanly with ``bin_dir``'s binaries (those of its data's
        major version), starting it first when it is down, so that a crashed cluster
        recovers before it stops: pg_upgrade reads only a cleanly shut-down cluster."""
        old = EmbeddedPostgres(self.cluster_dir, bin_dir=bin_dir, system_user=self.system_user)
        old._write_conf()
        if old._running_postmaster() is None:
            old._pg_ctl_start()
        old._pg_ctl_stop()

    def _running_postmaster(self) -> PidFile | None:
        """Our live postmaster per ``postmaster.pid``; a stale pid file is removed."""
        info = read_pid_file(self.data_dir)
        if info is None:
            return None
        if is_our_postmaster(info.pid, self.data_dir):
            return info
        logger.warning("stale postmaster.pid removed pid=%s data_dir=%s", info.pid, self.data_dir)
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "postmaster.pid").unlink()
        return None

    def _is_ready(self) -> bool:
        pg_isready = self.bin_dir / "pg_isready"
        if is_executable(pg_isready):
            proc = self.run_tool(
                [str(pg_isready), "-q", "-t", "2", *self._client_args()], timeout=10
            )
            return proc.returncode == 0
        info = read_pid_file(self.data_dir)
        return bool(info and info.status == "ready" and (self.socket_dir / SOCKET_NAME).exists())

    def _wait_ready(self, pid: int) -> bool:
        """True once the postmaster accepts connections; False if it exits meanwhile."""
        deadline = time.monotonic() + READY_TIMEOUT
        while is_our_postmaster(pid, self.data_dir):
            if self._is_ready():
                return True
            if time.monotonic() > deadline:
                raise EmbeddedDatabaseError(
                    f"postmaster pid={pid} of {self.data_dir} is running but not accepting "
                    f"connections after {READY_TIMEOUT:.0f}s; see {self.log_file}"
                )
            time.sleep(0.1)
        return False

    def _pg_ctl_start(self) -> None:
        for leftover in (SOCKET_NAME, SOCKET_NAME + ".lock"):  # no postmaster of ours uses them
            with contextlib.suppress(FileNotFoundError):
                (self.socket_dir / leftover).unlink()
        started = time.monotonic()
        proc = self._pg_ctl("start", "-l", str(self.log_file))
        info = read_pid_file(self.data_dir)
        if proc.returncode != 0 or info is None:
            raise self.tool_failure("pg_ctl start", proc)
        elapsed = time.monotonic() - started
        logger.info("started postgres pid=%s seconds=%.2f", info.pid, elapsed)

    def _pg_ctl_stop(self) -> None:
        proc = self._pg_ctl("stop", "-m", "fast")
        if proc.returncode != 0 and self._running_postmaster() is not None:
            raise self.tool_failure("pg_ctl stop", proc)
        logger.info("stopped postgres data_dir=%s", self.data_dir)

    def _pg_ctl(self, action: str, *extra: str) -> subprocess.CompletedProcess[str]:
        args = ["-D", str(self.data_dir), "-w", "-s", "-t", str(int(READY_TIMEOUT)), *extra]
        return self.run_tool(
            [str(self.bin_dir / "pg_ctl"), action, *args], timeout=READY_TIMEOUT + 30
        )

    # ------------------------------------------------------------ databases
    def _client_args(self) -> list[str]:
        return ["-h", str(self.socket_dir), "-p", str(PORT), "-U", "postgres", "-d", "postgres"]

    def _psql(self, sql: str, name: str) -> subprocess.CompletedProcess[str]:
        options = ["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-v", f"dbname={name}"]
        psql = str(self.bin_dir / "psql")
        return self.run_tool([psql, *options, *self._client_args()], input=sql, timeout=60)

    def _ensure_database_psql(self, name: str) -> None:
        exists = "SELECT 1 FROM pg_database WHERE datname = :'dbname';\n"
        create = (
            "SELECT format('CREATE DATABASE %I', :'dbname') WHERE NOT EXISTS "
            "(SELECT FROM pg_database WHERE datname = :'dbname') \\gexec\n"
        )
        proc = self._psql(create, name)
        if proc.returncode != 0 and self._psql(exists, name).stdout.strip() != "1":
            raise self.tool_failure(f"creating database {name!r}", proc)
        logger.info("ensured database name=%s via=psql", name)

    async def _ensure_database_asyncpg(self, name: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(
            host=str(self.socket_dir), port=PORT, user="postgres", database="postgres"
        )
        try:
            if await _DATABASE_NAMED.fetchval(conn, name=name) is None:
                with contextlib.suppress(
                    asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError
                ):
                    # DDL takes no parameters: the name goes in as a quoted identifier
                    await conn.execute("CREATE DATABASE " + quote_ident(name))
        finally:
            await conn.close()
        logger.info("ensured database name=%s via=asyncpg", name)

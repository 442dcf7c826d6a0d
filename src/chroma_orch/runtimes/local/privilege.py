"""What a local Chroma server may see: its environment, its account, its files.

A server gets a short, explicit environment (nothing of the service's: no
``CHROMA_ORCH_*``, no cloud credentials), runs as ``local.system_user`` when the
service is root, and creates files with umask 077 (``spawn``). Its data directory and log are
private to its account: ``instances/<id>/`` 0700 and everything in it 0600 (or
0700), ``logs/<id>.log`` 0600, inside ``instances/`` (0711: entered, not listed) and
``logs/`` (0700). Files left more open by an older version are tightened when a server starts, and
all at once by the runtime's first ``discover`` (servers still running included).
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

from chroma_orch.runtimes.base import StartFailedError
from chroma_orch.runtimes.local.settings import LocalRuntimeSettings
from chroma_orch.system_user import (
    RunAs,
    SystemUserError,
    can_traverse,
    own_fd,
    own_tree,
    resolve_system_user,
)

PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
"""The service's variables every server gets (when set); ``local.server_env`` adds more."""

_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC


def server_environment(
    settings: LocalRuntimeSettings, home: Path, run_as: RunAs | None
) -> dict[str, str]:
    """The complete environment of a server whose data directory is ``home``."""
    names = (*PASSED_THROUGH, *settings.server_env)
    env = {name: os.environ[name] for name in names if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env |= {"HOME": str(home), "RUST_LOG": settings.rust_log, "ANONYMIZED_TELEMETRY": "False"}
    if run_as is not None:
        env |= {"USER": run_as.name, "LOGNAME": run_as.name}
    return env


@functools.cache
def server_account(name: str) -> RunAs | None:
    """The account servers run as: ``name`` when the service is root, else None (its own).

    Never a shared fallback such as ``nobody`` (Nginx's workers and PostgreSQL's
    fallback run as it): when ``name`` cannot be created, servers do not start."""
    if os.geteuid() != 0:
        return None
    try:
        return resolve_system_user(name, fallback=None)
    except SystemUserError as exc:
        raise StartFailedError("SpawnFailed", f"no account to run servers as: {exc}") from exc


def prepare_files(data: Path, log_file: Path, run_as: RunAs | None) -> None:
    """Create (or tighten) the data directory and log of one server for ``run_as``.

    ``data`` is ``<data dir>/instances/<id>``, ``log_file`` ``<data dir>/logs/<id>.log``.
    Blocks (walks the data directory): call it from a worker thread.
    """
    _service_dir(data.parent, 0o711 if run_as is not None else 0o700)
    _service_dir(log_file.parent, 0o700)
    with contextlib.suppress(FileExistsError):
        data.mkdir(mode=0o700)
    _check_reachable(data, run_as)
    own_tree(data, run_as, strip=0o077)
    _own_log(log_file, run_as, _LOG_FLAGS | os.O_CREAT)


def prepare_instances_dir(instances: Path, run_as: RunAs | None) -> None:
    """Create (or tighten) ``<data dir>/instances`` as ``prepare_files`` does, for what
    is written there before any server starts (a restore's new data directory).
    Blocks: call it from a worker thread."""
    _service_dir(instances, 0o711 if run_as is not None else 0o700)


def tighten_existing(instances: Path, logs: Path, run_as: RunAs | None) -> None:
    """Every data directory and log under ``instances`` and ``logs`` made private to
    ``run_as``, as ``prepare_files`` makes one: after an upgrade, also those of servers
    an older version started, which keep running. Blocks: call it from a worker thread.
    """
    if instances.is_dir():
        _service_dir(instances, 0o711 if run_as is not None else 0o700)
        for data in instances.iterdir():
            if data.is_dir() and not data.is_symlink():
                own_tree(data, run_as, strip=0o077)
    if logs.is_dir():
        _service_dir(logs, 0o700)
        for log_file in logs.glob("*.log"):
            with contextlib.suppress(OSError):
                _own_log(log_file, run_as, _LOG_FLAGS)


def _own_log(log_file: Path, run_as: RunAs | None, flags: int) -> None:
    fd = os.open(log_file, flags, 0o600)
    try:
        own_fd(fd, run_as, strip=0o177)
    finally:
        os.close(fd)


def _service_dir(path: Path, mode: int) -> None:
    """A directory of the service's own (``instances/``, ``logs/``) with ``mode``;
    missing ancestors are created 0711 (entered, not listed)."""
    for ancestor in reversed(path.parents):
        if not ancestor.is_dir():
            with contextlib.suppress(FileExistsError):
                ancestor.mkdir(mode=0o711)
                os.chmod(ancestor, 0o711)  # mkdir obeys the umask
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=mode)
    if path.stat().st_uid == os.geteuid():
        os.chmod(path, mode)


def _check_reachable(data: Path, run_as: RunAs | None) -> None:
    """The server opens ``data`` by its path: its account must search every parent."""
    if run_as is None:
        return
    for directory in reversed(data.parents):
        if not can_traverse(directory, run_as):
            raise StartFailedError(
                "SpawnFailed",
                f"directory {directory} is not searchable (x permission) by user "
                f"{run_as.name!r}, which runs the servers; set CHROMA_ORCH_DATA_DIR elsewhere "
                "(e.g. /var/lib/chroma-orch) or grant search permission on it",
            )


def write_config(config: Path, text: str, run_as: RunAs | None) -> None:
    """Write a server's config file (``instances/<id>.chroma-config.yaml``), private
    to ``run_as`` as its data is. Blocks: call it from a worker thread."""
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        own_fd(fd, run_as, strip=0o177)
        os.write(fd, text.encode())
    finally:
        os.close(fd)

"""The unprivileged accounts children run as when the service is root, and handing
files over to them. Used by the embedded PostgreSQL and by the local runtime."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class SystemUserError(Exception):
    """The account cannot be found or created, or is unfit (root)."""


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account a child process runs as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def lookup_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def resolve_system_user(name: str, *, fallback: str | None = "nobody") -> RunAs:
    """Account ``name``, created as a system user if missing; ``fallback`` if it cannot
    be (None: ``SystemUserError`` instead)."""
    if lookup_user(name) is None:
        cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
            logger.info("created system user user=%s", name)
        except (OSError, subprocess.SubprocessError) as exc:
            if lookup_user(name) is None:  # else: created concurrently by someone else
                if fallback is None:
                    raise SystemUserError(
                        f"system user {name!r} does not exist and cannot be created ({exc}); "
                        f"create it (useradd --system {name}) or name another"
                    ) from exc
                logger.warning(
                    "cannot create system user user=%s error=%r fallback=%s", name, exc, fallback
                )
                name = fallback
    entry = lookup_user(name)
    if entry is None:
        raise SystemUserError(f"system user {name!r} does not exist and cannot be created")
    if entry.pw_uid == 0:
        raise SystemUserError(f"system user {name!r} is root: choose an unprivileged one")
    groups = tuple(os.getgrouplist(name, entry.pw_gid))
    return RunAs(name, entry.pw_uid, entry.pw_gid, groups)


def can_traverse(path: Path, run_as: RunAs | None) -> bool:
    """Whether ``run_as`` (None: this process) may search directory ``path``."""
    if run_as is None:
        return os.access(path, os.X_OK)
    st = path.stat()
    if st.st_uid == run_as.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in run_as.groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def own_tree(root: Path, run_as: RunAs | None, strip: int = 0) -> None:
    """Give everything under ``root`` (itself included) to ``run_as`` (None: leave the
    owner) and clear the ``strip`` permission bits (0o077: private to the owner).

    Safe on a tree the account controls: never follows a symbolic link (``os.fwalk``
    does not descend into one, files are changed through descriptors opened with
    O_NOFOLLOW), so a link planted there cannot redirect root's chown or chmod.
    """
    for _, _, files, dir_fd in os.fwalk(root):
        own_fd(dir_fd, run_as, strip)
        for name in files:
            try:
                fd = os.open(name, _OPEN_NOFOLLOW, dir_fd=dir_fd)
            except OSError:  # a symbolic link, socket, or gone meanwhile
                if run_as is not None:
                    with contextlib.suppress(OSError):
                        os.chown(name, run_as.uid, run_as.gid, dir_fd=dir_fd, follow_symlinks=False)
                continue
            try:
                own_fd(fd, run_as, strip)
            finally:
                os.close(fd)


_OPEN_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def own_fd(fd: int, run_as: RunAs | None, strip: int) -> None:
    """``own_tree`` for one open file or directory."""
    st = os.fstat(fd)
    if run_as is not None and (st.st_uid, st.st_gid) != (run_as.uid, run_as.gid):
        os.fchown(fd, run_as.uid, run_as.gid)
    mode = stat.S_IMODE(st.st_mode)
    if mode & strip:
        os.fchmod(fd, mode & ~strip)

"""The program every local Chroma server runs under (see ``chroma_launch``).

Run by path, never as ``-m`` and never importing ``chroma_orch``::

    python -I launcher_main.py LOCK_FILE PATH HOST PORT NICENESS RUN_AS MEMORY_MIB CONFIG
        VERSION [COMMAND ...]

It runs as root when the service is root (before dropping it), under the interpreter
of the server's Chroma version (``local.python`` or a ``local.chroma_versions`` entry),
and its start-up time is part of every server's: so it imports only ``fcntl``,
``json``, ``os``, ``resource``, ``sys`` and ``time`` (all built in), and ``-I``
(isolated mode) keeps ``PYTHON*`` variables, user site-packages and this file's
directory out of its ``sys.path``, even while it is root.

In order: NICENESS lowers its CPU priority below the service's. It takes an exclusive
``flock`` on LOCK_FILE (a short retry covers a service probing the lock at the very
moment it is taken; another holder means exit status ``EXIT_DIR_IN_USE``) and writes
``{"pid", "host", "port", "chroma_version", "memory_mib"}`` into it (VERSION: the
Chroma version it runs, as the service names it; empty: unknown). MEMORY_MIB (empty:
none) becomes the process's ``RLIMIT_DATA``, soft and hard, inherited by COMMAND:
allocations beyond it fail (docs/local-runtime.md says why DATA, not AS).
Without a COMMAND it imports chromadb's Rust bindings (no ``import chromadb``: ~0.1 s
to ready, ~37 MB) and serves through them, with CONFIG (a config file; empty: the
``--path/--host/--port`` flags); with one it execs COMMAND, which inherits the locked
descriptor. RUN_AS ("UID:GID",
or empty) is the account it switches to before serving or exec'ing: a root service's
launcher opens the lock and imports the bindings as root (so neither the lock's
directory nor the interpreter needs to be the account's to read), then drops root for
good (supplementary groups, then group, then user) and checks that no id is 0 left.
"""

import fcntl
import json
import os
import resource
import sys
import time

EXIT_DIR_IN_USE = 75
"""Exit status when another live process holds the data directory's lock."""

EXIT_CANNOT_EXEC = 127
"""Exit status when COMMAND cannot be run (as a shell's)."""

DIR_IN_USE_TEXT = "is already served by another process"

LOCK_ATTEMPTS = 6
LOCK_RETRY_PAUSE = 0.01  # seconds


def take_lock(lock_file: str, path: str, host: str, port: int, extra: dict[str, object]) -> int:
    """The descriptor of ``lock_file``, locked and holding this process's record;
    exits with ``EXIT_DIR_IN_USE`` if another process keeps it locked."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    for _ in range(LOCK_ATTEMPTS):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(LOCK_RETRY_PAUSE)
    else:
        sys.stderr.write(f"data directory {path} {DIR_IN_USE_TEXT}\n")
        sys.exit(EXIT_DIR_IN_USE)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": host, "port": port, **extra}).encode())
    return fd


def drop_root(run_as: str) -> None:
    """Become ``run_as`` ("UID:GID") for good; nothing when it is empty."""
    if not run_as:
        return
    uid, gid = (int(n) for n in run_as.split(":"))
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if 0 in (*os.getresuid(), *os.getresgid()):
        sys.exit("could not drop root")


def run_command(fd: int, command: list[str]) -> None:
    """Exec ``command`` with the locked ``fd`` inherited; returns only by exiting."""
    os.set_inheritable(fd, True)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"cannot run {command[0]}: {exc}\n")
        sys.exit(EXIT_CANNOT_EXEC)


def limit_memory(memory_mib: str) -> None:
    """Make ``memory_mib`` MiB this process's (and its exec's) RLIMIT_DATA."""
    if memory_mib:
        limit = int(memory_mib) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def main(argv: list[str]) -> None:
    lock_file, path, host, port, niceness, run_as, memory_mib, config, version = argv[:9]
    command = argv[9:]
    os.nice(int(niceness))
    extra: dict[str, object] = {
        "chroma_version": version or None,
        "memory_mib": int(memory_mib) if memory_mib else None,
    }
    fd = take_lock(lock_file, path, host, int(port), extra)
    limit_memory(memory_mib)
    if command:
        drop_root(run_as)
        run_command(fd, command)
    else:
        import chromadb_rust_bindings  # as root still: the account need not read it

        drop_root(run_as)
        flags = [config] if config else ["--path", path, "--host", host, "--port", port]
        chromadb_rust_bindings.cli(["chroma", "run", *flags])


if __name__ == "__main__":
    main(sys.argv[1:])

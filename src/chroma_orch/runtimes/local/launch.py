"""One local Chroma server process: how it is launched, locked, identified and reaped.

Every server runs under a small launcher program (``launcher_main``). Before the
server starts, the launcher takes an exclusive ``flock`` on ``<instance>.lock`` and
writes ``{"pid", "host", "port"}`` into it; the lock lives exactly as long as the
server process, because the open descriptor belongs to it. Chroma itself does not
lock its data directory, so this is what guarantees one server per directory, and
what lets a restarted service find its servers again (``lock_is_held``, ``read_lock``).

The two readiness probes are hand-written on purpose: a measurement argues against
the libraries (``bench/probes.py``; 2 shared cores). ``listens_on`` asks the kernel
for listening sockets only: 0.38 ms per call beside 500 listening sockets and 1000
connections, where psutil's ``net_connections`` took 12-37 ms (it reads every socket
on the machine), blocking the event loop once per launched server. ``http_status``,
polled every 10 ms per starting server, costs 8.5 us of CPU per refused probe and
160 us per answered one, where a shared ``httpx.AsyncClient`` costs 400 us and
1.8 ms. With both swapped for psutil and httpx, ``bench/lifecycle.py`` (10 at once,
3 rounds, two alternating pairs) gave launch-to-running p50 0.69 -> 0.95 s and
0.54 -> 0.70 s: 25-38 % slower in every pair, where the goal allows 0.05 on the
launch ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from chroma_orch.runtimes.local import launcher_main
from chroma_orch.runtimes.local.settings import LocalRuntimeSettings
from chroma_orch.system_user import RunAs

LAUNCHER = launcher_main.__file__
"""The launcher program's file, where the installed package has it: every server runs
as ``python -I LAUNCHER LOCK_FILE PATH HOST PORT NICENESS RUN_AS MEMORY_MIB CONFIG VERSION
[COMMAND ...]`` (``launcher_main`` says what it does). Run by path, so that it imports nothing of
chroma_orch while it is root, and starts as fast as a ``-c`` program."""

EXIT_DIR_IN_USE = launcher_main.EXIT_DIR_IN_USE
DIR_IN_USE_TEXT = launcher_main.DIR_IN_USE_TEXT


@dataclass(frozen=True)
class ServerLaunch:
    """What one server runs on beyond its address: its Chroma version's interpreter and
    command, its memory limit and its config file."""

    python: str
    chroma_command: str
    chroma_version: str | None = None
    memory_mib: int | None = None
    config: Path | None = None
    """The server's config file (``server_settings.server_config``); None: flags."""


def server_command(
    settings: LocalRuntimeSettings,
    path: Path,
    lock_file: Path,
    host: str,
    port: int,
    run_as: RunAs | None = None,
    launch: ServerLaunch | None = None,
) -> list[str]:
    """The argv that starts one server on ``path`` (the only place that decides it),
    as ``run_as`` when given, as ``launch`` says (default: ``settings``' interpreter and
    command, no limit, no config file)."""
    launch = launch or ServerLaunch(settings.python, settings.chroma_command)
    argv = [launch.python, "-I", LAUNCHER, str(lock_file), str(path), host]
    argv += [str(port), str(settings.niceness), f"{run_as.uid}:{run_as.gid}" if run_as else ""]
    argv += [str(launch.memory_mib or ""), str(launch.config or ""), launch.chroma_version or ""]
    if settings.launcher == "chroma-cli":
        argv += [launch.chroma_command, "run"]
        if launch.config is not None:
            argv += [str(launch.config)]
        else:
            argv += ["--path", str(path), "--host", host, "--port", str(port)]
    return argv


def spawn(
    argv: list[str], log_file: Path, env: Mapping[str, str], header: str, cwd: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` in its own session in ``cwd``, with exactly the environment ``env``
    and umask 077 (what it creates is its account's alone), output appended to
    ``log_file`` after ``header``.

    Returns the child and the log offset where its output starts. ``subprocess.Popen``
    rather than ``asyncio.create_subprocess_exec``: asyncio kills a child whose transport
    is garbage-collected while it runs, which with Python 3.12's pidfd child watcher
    happens when the event loop closes, i.e. on every graceful shutdown of the service.
    (asyncio calls ``Popen`` synchronously as well, so nothing blocks longer.)
    """
    with log_file.open("ab") as out:
        out.write(header.encode() + b"\n")
        out.flush()
        offset = out.tell()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            umask=0o077,
            start_new_session=True,  # outlives the service; a terminal's Ctrl-C misses it
        )
    return popen, offset


def watch_exit(
    popen: subprocess.Popen[bytes], on_exit: Callable[[int], None]
) -> Callable[[], None]:
    """Reap ``popen`` as soon as it exits and call ``on_exit(returncode)``.

    Returns a function that stops watching. On Linux a pidfd in the event loop does it
    (no thread, no task, nothing holding ``popen`` once unwatched); elsewhere a task
    polls every 0.1 s.
    """
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(popen.pid) if sys.platform == "linux" else -1
    except OSError:  # already reaped, or an old kernel
        pidfd = -1
    if pidfd < 0:
        task = loop.create_task(_poll_exit(popen, on_exit))

        def cancel() -> None:
            task.cancel()

        return cancel
    watching = True

    def unwatch() -> None:
        nonlocal watching
        if watching:
            watching = False
            loop.remove_reader(pidfd)
            os.close(pidfd)

    def readable() -> None:
        unwatch()
        code = popen.poll()  # pidfd readable: it has exited, so this reaps at once
        on_exit(code if code is not None else popen.wait())

    loop.add_reader(pidfd, readable)
    return unwatch


async def _poll_exit(popen: subprocess.Popen[bytes], on_exit: Callable[[int], None]) -> None:
    while True:
        code = popen.poll()
        if code is not None:
            on_exit(code)
            return
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class LockRecord:
    """What the launcher wrote into the lock file it holds."""

    pid: int
    host: str
    port: int
    chroma_version: str | None = None
    memory_mib: int | None = None


def lock_is_held(lock_file: Path) -> bool:
    """Whether a live process holds ``lock_file`` right now.

    Probes with a shared lock, released at once: probes never block each other,
    and the launcher retries briefly if it races with one.
    """
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we may have taken
    return False


def read_lock(lock_file: Path) -> LockRecord | None:
    """The record in ``lock_file``; None if missing or not (yet) complete."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(lock_file.read_bytes())
        version, memory = data.get("chroma_version"), data.get("memory_mib")
        return LockRecord(
            pid=int(data["pid"]),
            host=str(data["host"]),
            port=int(data["port"]),
            chroma_version=None if version is None else str(version),
            memory_mib=None if memory is None else int(memory),
        )
    return None


def live_process(pid: int, create_time: float | None = None) -> psutil.Process | None:
    """Process ``pid`` if it runs (not a zombie) and, when given, started at ``create_time``."""
    try:
        process = psutil.Process(pid)
        if create_time is not None and abs(process.create_time() - create_time) > 0.01:
            return None  # the pid was reused
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    return process


def listens_on(process: psutil.Process, port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``process`` has a TCP socket listening on ``port``.

    Asks the kernel for its listening sockets only (sock_diag netlink, as ``ss -l``
    does) and matches their inodes against the process's file descriptors. psutil's
    ``net_connections`` parses every socket on the machine, TIME_WAIT ones included:
    about a hundred times slower on a busy host (module docstring); it remains the
    fallback where sock_diag is missing.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listening = listening_socket_inodes(family, port)
    except OSError:  # no sock_diag (not Linux, or restricted): ask psutil
        return _listens_on_psutil(process, port)
    if not listening:
        return False
    try:
        fds = os.listdir(f"/proc/{process.pid}/fd")
    except PermissionError:
        return True  # cannot tell; the other checks must do
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{process.pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in listening:
            return True
    return False


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_DONE = 3
_NLMSG_ERROR = 2
_TCP_LISTEN_STATE = 10
_NLMSG_HEADER = struct.Struct("=IHHII")
_DIAG_REQUEST = struct.Struct("=BBBxI48x")  # family, protocol, ext, states, zeroed sockid
_DIAG_MESSAGE = struct.Struct("=BBBB2s2s16s16sI8sIIIII")


def listening_socket_inodes(family: int, port: int) -> set[int]:
    """Inodes of the TCP sockets listening on ``port`` (kernel-filtered to LISTEN)."""
    request = _DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 1 << _TCP_LISTEN_STATE)
    header = _NLMSG_HEADER.pack(
        _NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0
    )
    found: set[int] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as sock:
        sock.sendall(header + request)
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + _NLMSG_HEADER.size <= len(data):
                length, kind = _NLMSG_HEADER.unpack_from(data, offset)[:2]
                if kind == _NLMSG_DONE:
                    return found
                if kind == _NLMSG_ERROR:
                    raise OSError("sock_diag request refused")
                fields = _DIAG_MESSAGE.unpack_from(data, offset + _NLMSG_HEADER.size)
                if int.from_bytes(fields[4], "big") == port:
                    found.add(fields[-1])
                offset += (length + 3) & ~3
            if not data:
                return found


def _listens_on_psutil(process: psutil.Process, port: int) -> bool:
    try:
        sockets = process.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return True
    except psutil.NoSuchProcess:
        return False
    return any(s.status == psutil.CONN_LISTEN and s.laddr.port == port for s in sockets)


def tail_lines(path: Path, count: int, start: int = 0, end: int | None = None) -> list[str]:
    """The last ``count`` lines of ``path`` at or after byte ``start`` (and before
    ``end``, default the end of the file), read from the end."""
    if count <= 0:
        return []
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return []
    with file:
        position = file.seek(0, os.SEEK_END) if end is None else end
        data = b""
        while position > start and data.count(b"\n") <= count:
            step = min(65536, position - start)
            position -= step
            file.seek(position)
            data = file.read(step) + data
    return data.decode(errors="replace").splitlines()[-count:]


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


async def follow_file(path: Path, tail: int, interval: float) -> AsyncGenerator[list[str], None]:
    """The last ``tail`` lines of ``path``, then each batch of complete new lines
    appended to it, checked every ``interval`` seconds (a file that does not exist
    yet is waited for). Ends once the file, having existed, is removed (the
    instance was deleted); else runs until cancelled."""
    size = _file_size(path)
    existed, position = size is not None, size or 0
    yield tail_lines(path, tail, end=position)
    pending = b""
    while True:
        await asyncio.sleep(interval)
        size = _file_size(path)
        if size is None:
            if existed:
                return
            continue
        existed = True
        if size < position:  # truncated or replaced: start over
            position, pending = 0, b""
        if size == position:
            continue
        with path.open("rb") as file:
            file.seek(position)
            chunk = file.read(size - position)
        position = size
        *complete, pending = (pending + chunk).split(b"\n")
        if complete:
            yield [line.decode(errors="replace") for line in complete]


@functools.lru_cache(maxsize=64)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _connect_now(sock: socket.socket, address: tuple[str, int]) -> int:
    """Start a non-blocking connect; its outcome if already known (0, or an errno
    such as ECONNREFUSED), else EINPROGRESS.

    Some kernels answer a non-blocking loopback connect with EINPROGRESS even though
    the handshake (or the refusal) has already happened by the time it returns: the
    socket's pending error, or its writability, tells at once.
    """
    code = sock.connect_ex(address)
    if code != errno.EINPROGRESS:
        return code
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        return error
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    return 0 if poller.poll(0) else errno.EINPROGRESS


async def http_status(host: str, port: int, path: str, timeout: float) -> int | None:
    """Status code of a bare ``GET path`` (None when nothing answers in time).

    A raw HTTP/1.1 exchange on a fresh socket: health checks run every few
    milliseconds while servers start, and a full HTTP client (or even asyncio's
    streams, which resolve the address in a worker thread) costs far more CPU per
    probe than the server takes to answer. While nothing listens yet (most probes
    of a starting server), a numeric address is refused at once, with no event
    loop round at all (``_connect_now``).
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    received = b""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        connected = False
        if _is_ip(host):
            code = _connect_now(sock, (host, port))
            if code == errno.ECONNREFUSED:
                return None
            connected = code == 0
        try:
            async with asyncio.timeout(timeout):
                if not connected:
                    await loop.sock_connect(sock, (host, port))
                await loop.sock_sendall(sock, request.encode())
                while b"\r\n" not in received and len(received) < 4096:
                    chunk = await loop.sock_recv(sock, 1024)
                    if not chunk:
                        break
                    received += chunk
        except (OSError, TimeoutError):
            return None
    parts = received.split(b"\r\n", 1)[0].split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None

"""The ``local`` runtime: each instance is a Chroma server process on this host.

Layout under ``data_dir``: ``instances/<id>/`` (server data), ``instances/<id>.lock``
(held by the server for its lifetime, see ``chroma_launch``), ``instances/<id>.chroma-config.yaml``
(the config file of a server whose spec has settings), ``logs/<id>.log``, and
while a restore replaces the data, ``instances/<id>.incoming`` and ``.previous``
(``data_swap``).
Servers run in their own session and outlive the service; a restarted service finds
them through their lock files (``discover``, or ``start`` adopting them). What a
server may see and touch (environment, account, file modes): ``local_privilege``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from chroma_orch.runtimes.base import (
    INSTANCE_ID,
    Endpoint,
    ExitCallback,
    Handle,
    InstanceSpec,
    Observation,
    ObservedState,
    PortReservations,
    RuntimeUnavailableError,
    ServerSpec,
    SpecCheck,
    StartFailedError,
    StartPhase,
    check_launch_by,
)
from chroma_orch.runtimes.heartbeat import answers, heartbeats
from chroma_orch.runtimes.local.data_swap import finish_swap, swap_in
from chroma_orch.runtimes.local.launch import (
    DIR_IN_USE_TEXT,
    EXIT_DIR_IN_USE,
    LockRecord,
    ServerLaunch,
    follow_file,
    listens_on,
    live_process,
    lock_is_held,
    read_lock,
    server_command,
    spawn,
    tail_lines,
    watch_exit,
)
from chroma_orch.runtimes.local.ports import port_is_free
from chroma_orch.runtimes.local.privilege import (
    prepare_files,
    prepare_instances_dir,
    server_account,
    server_environment,
    tighten_existing,
    write_config,
)
from chroma_orch.runtimes.local.settings import LocalRuntimeSettings
from chroma_orch.runtimes.local.specs import LocalVersions, check_local_spec
from chroma_orch.runtimes.server_settings import CONFIG_FILE_NAME, server_config

log = logging.getLogger(__name__)

_TICK = 0.01
_FOLLOW_INTERVAL = 0.2
_HEARTBEAT_TIMEOUT = 0.5
_KILL_TIMEOUT = 10.0
_RECORD_WAIT = 0.5


@dataclass(frozen=True)
class _Paths:
    data: Path
    lock: Path
    log: Path

    @property
    def config(self) -> Path:
        """The server's config file: beside its data, not in it (the data is Chroma's)."""
        return self.data.with_name(f"{self.data.name}.{CONFIG_FILE_NAME}")

    @property
    def incoming(self) -> Path:
        """Where a restore writes the data that replaces ``data``."""
        return self.data.with_name(f"{self.data.name}.incoming")


@dataclass
class _Child:
    popen: subprocess.Popen[bytes]
    handle: Handle


class LocalRuntime:
    """Chroma servers as local processes; handles are re-attachable after a restart.

    Handle data: ``instance_id``, ``pid``, ``create_time`` (guards against pid reuse),
    ``host``, ``port``, ``path``, ``lock``, ``log``, ``log_offset`` (where this run's
    output starts in the log), ``chroma_version`` and ``memory_mib`` (what the server
    runs, from its lock record: None for a server an older version started) and, for a
    server this runtime spawned, ``spawned_at`` (epoch seconds: its start phase
    "running"); the generation is None for servers ``discover`` found.
    Exit callbacks fire for every exit of a server this object spawned, stops included.
    """

    name = "local"
    allocates_ports = True
    visibility_grace = 0.0  # its listing (the data directories' locks) is exact

    def __init__(
        self,
        settings: LocalRuntimeSettings,
        data_dir: Path,
        ports: PortReservations | None = None,
    ) -> None:
        self.start_timeout = settings.start_timeout
        self.wake_timeout = settings.wake_timeout
        self.launch_budget = settings.launch_budget
        self._ports = ports
        self._settings = settings
        self._instances = data_dir / "instances"
        self._logs = data_dir / "logs"
        self._children: dict[str, _Child] = {}
        self._unwatch: dict[int, Callable[[], None]] = {}  # by pid
        self._callbacks: list[ExitCallback] = []
        self._serving: set[tuple[int, float, int]] = set()  # see _serves
        self._tightened = False
        self._versions = LocalVersions.from_settings(settings)

    def chroma_versions(self) -> list[str]:
        return self._versions.names()

    def check_spec(self, spec: ServerSpec) -> SpecCheck:
        return check_local_spec(spec, self._versions, self._settings.default_memory_mib)

    async def start(self, spec: InstanceSpec) -> Handle:
        """Spawn the server, or adopt the one already serving this instance's data.

        Its port is ``spec.port`` when given, else one ``ports`` reserves (raising
        ``NoPortAvailableError`` when there is none yet). An adopted server keeps
        its own port, recorded as the instance's.
        """
        if spec.port is None and self._ports is None:
            raise ValueError("the local runtime needs spec.port or port reservations")
        running = self._own_handle(spec.instance_id)
        if running is None:
            running = await self._find_server(spec.instance_id, spec.generation)
        if running is not None:
            pid, port = running.data["pid"], running.data["port"]
            log.info("adopting server instance=%s pid=%s port=%s", spec.instance_id, pid, port)
            if self._ports is not None:
                await self._ports.record(spec.instance_id, port)
            return running
        port = spec.port
        if port is None:
            assert self._ports is not None
            host = self._settings.host
            port = await self._ports.reserve(spec.instance_id, lambda p: port_is_free(host, p))
        return await self._spawn(spec, port)

    async def wait_ready(self, handle: Handle, timeout: float) -> Observation:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            budget = min(_HEARTBEAT_TIMEOUT, max(deadline - loop.time(), _TICK))
            answered = await self._heartbeat(handle, budget) if self._alive(handle) else None
            observation = self._observe(handle, answered)
            if observation.state is not ObservedState.STARTING or loop.time() >= deadline:
                return observation
            await asyncio.sleep(_TICK)

    async def poll(self, handles: Mapping[str, Handle]) -> dict[str, Observation]:
        """Whether each server lives; one not yet proven to serve (``_serves``) is asked
        for its heartbeat. A proven server stays RUNNING while its process lives: that
        it still answers is the reconciler's heartbeat pass's question (``heartbeat``),
        asked with a failure threshold instead of at every poll."""
        readable = {iid: handle for iid, handle in handles.items() if _readable(handle)}
        live = [iid for iid, handle in readable.items() if self._alive(handle)]
        unproven = [iid for iid in live if _identity(handles[iid]) not in self._serving]
        answers = await asyncio.gather(*(self._heartbeat(handles[iid]) for iid in unproven))
        answered = dict.fromkeys(live, True) | dict(zip(unproven, answers, strict=True))
        return {
            iid: self._observe(handle, answered.get(iid)) if iid in readable else _UNREADABLE
            for iid, handle in handles.items()
        }

    async def heartbeat(self, servers: Mapping[str, Endpoint], timeout: float) -> dict[str, bool]:
        return await heartbeats(servers, timeout)

    async def stop(self, handle: Handle) -> None:
        """SIGTERM the server's process group, SIGKILL after ``stop_grace``; reap it."""
        if not _readable(handle) or not self._alive(handle):
            return
        iid, pid, grace = (
            handle.data.get("instance_id"),
            handle.data["pid"],
            self._settings.stop_grace,
        )
        log.info("stopping server instance=%s pid=%s", iid, pid)
        self._signal(handle, signal.SIGTERM)
        self._signal(handle, signal.SIGCONT)  # a stopped (hung) server gets its SIGTERM now
        if await self._wait_gone(handle, grace):
            return
        log.warning("server ignored SIGTERM, killing instance=%s pid=%s grace=%s", iid, pid, grace)
        self._signal(handle, signal.SIGKILL)
        if not await self._wait_gone(handle, _KILL_TIMEOUT):
            raise RuntimeUnavailableError(f"pid {pid} survived SIGKILL")

    async def delete(self, instance_id: str, handle: Handle | None, keep_data: bool) -> None:
        paths = self._paths(instance_id)
        if handle is not None:
            await self.stop(handle)
        own = self._own_handle(instance_id)
        if own is not None:
            await self.stop(own)
        found = await self._find_server(instance_id, None)
        if found is not None:
            await self.stop(found)
        self._children.pop(instance_id, None)
        paths.lock.unlink(missing_ok=True)
        paths.config.unlink(missing_ok=True)
        await asyncio.to_thread(finish_swap, paths.data)
        await asyncio.to_thread(shutil.rmtree, paths.incoming, ignore_errors=True)
        if not keep_data:
            await asyncio.to_thread(shutil.rmtree, paths.data, ignore_errors=True)
            paths.log.unlink(missing_ok=True)
        log.info("deleted instance=%s keep_data=%s", instance_id, keep_data)

    def data_path(self, instance_id: str) -> Path:
        data = self._paths(instance_id).data
        finish_swap(data)  # a swap a crash interrupted: its data, not a missing directory
        return data

    async def replace_data(self, instance_id: str, fill: Callable[[Path], Awaitable[None]]) -> None:
        """``fill`` writes ``instances/<id>.incoming``; then two renames swap it in
        (the old data moves to ``instances/<id>.previous`` and is removed after): see
        ``finish_swap`` for a crash between them."""
        paths = self._paths(instance_id)
        run_as = server_account(self._settings.system_user)
        await asyncio.to_thread(prepare_instances_dir, self._instances, run_as)
        await asyncio.to_thread(finish_swap, paths.data)
        await asyncio.to_thread(shutil.rmtree, paths.incoming, ignore_errors=True)
        try:
            await fill(paths.incoming)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, paths.incoming, ignore_errors=True)
            raise
        await asyncio.to_thread(swap_in, paths.incoming, paths.data)
        log.info("replaced data instance=%s", instance_id)

    async def logs(self, instance_id: str, handle: Handle | None, tail: int) -> list[str]:
        path = Path(handle.data["log"]) if handle is not None else self._paths(instance_id).log
        return tail_lines(path, tail)

    async def follow_logs(
        self, instance_id: str, handle: Handle | None, tail: int
    ) -> AsyncIterator[list[str]]:
        path = Path(handle.data["log"]) if handle is not None else self._paths(instance_id).log
        async for lines in follow_file(path, tail, _FOLLOW_INTERVAL):
            yield lines

    async def discover(self) -> dict[str, Handle]:
        if not self._tightened:
            self._tightened = True
            await asyncio.to_thread(self._tighten_existing)
        found: dict[str, Handle] = {}
        for lock_file in sorted(self._instances.glob("*.lock")):
            instance_id = lock_file.name.removesuffix(".lock")
            try:
                handle = await self._find_server(instance_id, None)
            except (RuntimeUnavailableError, ValueError) as exc:
                log.warning("skipping lock file=%s error=%s", lock_file, exc)
                continue
            if handle is not None:
                found[instance_id] = handle
        return found

    def on_exit(self, callback: ExitCallback) -> None:
        self._callbacks.append(callback)

    async def aclose(self) -> None:
        """Stop watching; the servers keep running and ``discover`` finds them again."""
        for unwatch in self._unwatch.values():
            unwatch()
        self._unwatch.clear()
        with warnings.catch_warnings():
            # Popen warns "still running" when dropped: leaving servers running is the point.
            warnings.simplefilter("ignore", ResourceWarning)
            self._children.clear()

    def _tighten_existing(self) -> None:
        """Once per runtime: what older versions left readable (see ``local_privilege``)."""
        try:
            run_as = server_account(self._settings.system_user)
            tighten_existing(self._instances, self._logs, run_as)
        except (StartFailedError, OSError) as exc:
            log.warning("cannot tighten server files error=%s", exc)

    # -- spawning and watching -------------------------------------------------

    async def _spawn(self, spec: InstanceSpec, port: int) -> Handle:
        """Spawn in a worker thread: creating the directories, forking and exec'ing,
        and reading the child's start time take milliseconds of a blocked event loop
        per server, which many starts at once would queue up."""
        paths = self._paths(spec.instance_id)
        host, settings = self._settings.host, self._settings
        launch = self._launch(spec.server, paths)
        header = (
            f"--- chroma-orch {datetime.now(UTC).isoformat(timespec='seconds')} starting "
            f"generation={spec.generation} port={port} launcher={settings.launcher} "
            f"chroma={launch.chroma_version} memory_mib={launch.memory_mib}"
        )

        def start() -> tuple[subprocess.Popen[bytes], int, float, float]:
            run_as = server_account(settings.system_user)
            finish_swap(paths.data)  # before anything creates the data directory
            prepare_files(paths.data, paths.log, run_as)
            if launch.config is not None:
                text = server_config(
                    spec.server.settings, persist_path=str(paths.data), host=host, port=port
                )
                write_config(launch.config, text, run_as)
            else:
                paths.config.unlink(missing_ok=True)
            argv = server_command(settings, paths.data, paths.lock, host, port, run_as, launch)
            env = server_environment(settings, paths.data, run_as)
            check_launch_by(spec)  # in the thread: a spawn queued past it launches nothing
            try:
                popen, offset = spawn(argv, paths.log, env, header, paths.data)
            except OSError as exc:
                raise StartFailedError("SpawnFailed", f"cannot run {argv[0]}: {exc}") from exc
            spawned_at = time.time()
            return popen, offset, psutil.Process(popen.pid).create_time(), spawned_at

        popen, offset, create_time, spawned_at = await asyncio.to_thread(start)
        record = LockRecord(popen.pid, host, port, launch.chroma_version, launch.memory_mib)
        handle = _make_handle(spec.instance_id, paths, record, create_time, offset, spec.generation)
        handle = Handle(handle.generation, {**handle.data, "spawned_at": spawned_at})
        self._children[spec.instance_id] = _Child(popen, handle)
        self._unwatch[popen.pid] = watch_exit(
            popen, lambda code: self._child_exited(spec.instance_id, popen.pid, code)
        )
        log.info("started server instance=%s pid=%s port=%s", spec.instance_id, popen.pid, port)
        return handle

    def _launch(self, server: ServerSpec, paths: _Paths) -> ServerLaunch:
        """How a server of ``server`` (its spec, resolved here again: an old row's
        empty spec gets today's defaults) runs; a spec ``check_spec`` refuses cannot."""
        check = self.check_spec(server)
        if check.problems:
            raise StartFailedError("InvalidSpec", "; ".join(check.problems))
        resolved = check.resolved
        assert resolved.chroma_version is not None
        launch = self._versions.launchers[resolved.chroma_version]
        config = paths.config if resolved.settings else None
        return dataclasses.replace(launch, memory_mib=resolved.memory_mib, config=config)

    def _child_exited(self, instance_id: str, pid: int, code: int) -> None:
        self._unwatch.pop(pid, None)
        log.info("server exited instance=%s pid=%s code=%s", instance_id, pid, code)
        for callback in list(self._callbacks):
            try:
                callback(instance_id)
            except Exception:
                log.exception("exit callback failed instance=%s", instance_id)

    # -- finding and checking servers -------------------------------------------

    def _paths(self, instance_id: str) -> _Paths:
        if not INSTANCE_ID.fullmatch(instance_id):
            raise ValueError(f"invalid instance id {instance_id!r}")
        return _Paths(
            data=self._instances / instance_id,
            lock=self._instances / f"{instance_id}.lock",
            log=self._logs / f"{instance_id}.log",
        )

    def _own_child(self, handle: Handle) -> _Child | None:
        child = self._children.get(str(handle.data.get("instance_id")))
        return child if child is not None and child.popen.pid == handle.data["pid"] else None

    def _own_handle(self, instance_id: str) -> Handle | None:
        child = self._children.get(instance_id)
        return child.handle if child is not None and child.popen.poll() is None else None

    async def _find_server(self, instance_id: str, generation: int | None) -> Handle | None:
        """The live process holding this instance's lock, as a handle."""
        paths = self._paths(instance_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RECORD_WAIT
        while lock_is_held(paths.lock):
            record = read_lock(paths.lock)
            process = live_process(record.pid) if record else None
            if record is not None and process is not None:
                offset = paths.log.stat().st_size if paths.log.exists() else 0
                create_time = process.create_time()
                return _make_handle(instance_id, paths, record, create_time, offset, generation)
            if loop.time() >= deadline:  # the launcher writes its record right after locking
                raise RuntimeUnavailableError(f"{paths.lock} is locked by an unknown process")
            await asyncio.sleep(_TICK)
        return None

    def _alive(self, handle: Handle) -> bool:
        child = self._own_child(handle)
        if child is not None:
            return child.popen.poll() is None  # also reaps it once it has exited
        return live_process(handle.data["pid"], handle.data["create_time"]) is not None

    def _serves(self, handle: Handle) -> bool:
        """Whether our process holds the data directory's lock and listens on the port.

        Proven once per process (the listening-socket check costs a few ms), then remembered.
        """
        key = _identity(handle)
        if key in self._serving:
            return True
        record = read_lock(Path(handle.data["lock"]))
        process = live_process(handle.data["pid"], handle.data["create_time"])
        if record is None or record.pid != handle.data["pid"] or process is None:
            return False
        if not listens_on(process, handle.data["port"], handle.data["host"]):
            return False
        self._serving.add(key)
        return True

    async def _heartbeat(self, handle: Handle, wait: float = _HEARTBEAT_TIMEOUT) -> bool:
        return await answers(_endpoint(handle), wait)

    def _observe(self, handle: Handle, answered: bool | None) -> Observation:
        """``answered``: None when the process is gone, else whether the heartbeat answered.

        A heartbeat alone proves nothing: when our server fails to bind its port, whatever
        holds the port answers. RUNNING also needs our process to hold the data directory
        and to listen on the port.
        """
        if answered is None:
            self._serving.discard(_identity(handle))
            return self._exited(handle)
        serves = self._serves(handle)
        if answered and serves:
            phase = StartPhase.HEARTBEAT_ANSWERED
            return Observation(
                ObservedState.RUNNING,
                endpoint=_endpoint(handle),
                phase=phase,
                phase_times=_phase_times(handle, serves),
            )
        phase = StartPhase.LISTENING if serves else StartPhase.RUNNING
        return Observation(
            ObservedState.STARTING,
            endpoint=_endpoint(handle),
            message="process alive, not serving its heartbeat yet",
            phase=phase,
            phase_times=_phase_times(handle, serves),
        )

    def _exited(self, handle: Handle) -> Observation:
        child = self._own_child(handle)
        code = child.popen.returncode if child is not None else None
        tail = tail_lines(Path(handle.data["log"]), 20, handle.data.get("log_offset", 0))
        lines = [line for line in tail if line.strip()]
        text = "\n".join(lines)
        if code == EXIT_DIR_IN_USE or DIR_IN_USE_TEXT in text:
            reason = "DataDirInUse"
        elif "not available" in text:  # chroma: "Address … is not available", exit 0
            reason = "PortUnavailable"
        else:
            reason = "ProcessExited"
        message = _describe_exit(code)
        if lines:
            message += "; last log lines:\n" + "\n".join(lines[-5:])
        return Observation(ObservedState.EXITED, reason=reason, message=message)

    # -- stopping --------------------------------------------------------------

    def _signal(self, handle: Handle, sig: signal.Signals) -> None:
        if not self._alive(handle):  # also the pid-reuse guard (create_time)
            return
        pid = int(handle.data["pid"])
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    async def _wait_gone(self, handle: Handle, within: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._alive(handle):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_TICK)
        return True


def _make_handle(
    instance_id: str,
    paths: _Paths,
    server: LockRecord,
    create_time: float,
    log_offset: int,
    generation: int | None,
) -> Handle:
    data = {
        "instance_id": instance_id,
        "pid": server.pid,
        "create_time": create_time,
        "host": server.host,
        "port": server.port,
        "path": str(paths.data),
        "lock": str(paths.lock),
        "log": str(paths.log),
        "log_offset": log_offset,
        "chroma_version": server.chroma_version,
        "memory_mib": server.memory_mib,
    }
    return Handle(generation, data)


def _phase_times(handle: Handle, listening: bool) -> dict[StartPhase, datetime]:
    """When a live server reached its start phases, as far as this runtime sees: the
    process runs since its spawn ("running"; for a server found, not spawned, since
    its create time, which the kernel keeps to within a second); one proven to listen
    has been listening since now at the latest (the reconciler keeps the first time
    it saw)."""
    spawned_at = handle.data.get("spawned_at", handle.data["create_time"])
    spawned = datetime.fromtimestamp(float(spawned_at), UTC)
    times = {StartPhase.RUNNING: spawned}
    if listening:
        times[StartPhase.LISTENING] = datetime.now(UTC)
    return times


_HANDLE_FIELDS = frozenset({"pid", "create_time", "host", "port", "lock", "log"})
"""What this runtime reads of a handle (``_make_handle`` writes them all)."""
_UNREADABLE = Observation(
    ObservedState.EXITED,
    reason="UnreadableHandle",
    message="the handle names no process this runtime can find (written by another "
    "runtime or release, or damaged)",
)


def _readable(handle: Handle) -> bool:
    return _HANDLE_FIELDS <= handle.data.keys()


def _identity(handle: Handle) -> tuple[int, float, int]:
    return int(handle.data["pid"]), float(handle.data["create_time"]), int(handle.data["port"])


def _endpoint(handle: Handle) -> Endpoint:
    return Endpoint(str(handle.data["host"]), int(handle.data["port"]))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown (not a child of this service)"
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit code {code}"

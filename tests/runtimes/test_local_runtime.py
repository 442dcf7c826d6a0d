"""LocalRuntime against real Chroma servers (chromadb's Rust server, no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pydantic import ValidationError

from chroma_orch.runtimes.base import (
    Handle,
    InstanceSpec,
    ObservedState,
    StartFailedError,
    StartPhase,
)
from chroma_orch.runtimes.local.launch import (
    EXIT_DIR_IN_USE,
    lock_is_held,
    read_lock,
    server_command,
)
from chroma_orch.runtimes.local.privilege import server_account
from chroma_orch.runtimes.local.runtime import LocalRuntime
from chroma_orch.settings import LocalRuntimeSettings

READY_TIMEOUT = 15.0
CHROMA_SCRIPT = Path(sys.executable).parent / "chroma"
SLEEP = "import time; time.sleep(60)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spec(instance_id: str = "inst-1", port: int | None = None, generation: int = 1) -> InstanceSpec:
    return InstanceSpec(
        instance_id=instance_id,
        tenant_id="t1",
        name="db",
        generation=generation,
        port=port if port is not None else free_port(),
    )


def port_refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie nobody has reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def servers_on(path: Path) -> list[psutil.Process]:
    """Live processes of this test run whose command line names ``path``."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE and str(path) in " ".join(proc.cmdline()):
                found.append(proc)
    return found


def kill_leftovers(root: Path) -> None:
    """Last resort after a failed test: SIGKILL and reap anything still running from root."""
    leftovers = servers_on(root)
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(leftovers, timeout=5)


def on_disk(path: str | Path) -> bool:
    return Path(path).exists()


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def server_user_can_run(script: Path, settings: LocalRuntimeSettings) -> bool:
    """Whether the servers' account may run ``script``. A root service's chroma-cli
    launcher execs it after dropping root; its interpreter may be where only root
    reads (pyenv under /root), while the bindings launcher starts Python as root."""
    account = server_account(settings.system_user)
    if account is None:
        return True
    interpreter = script.read_text().splitlines()[0].removeprefix("#!").split()[0]
    try:
        subprocess.run(
            [interpreter, "-c", "pass"], user=account.uid, group=account.gid,
            extra_groups=[], check=True, capture_output=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


@pytest.fixture
def settings() -> LocalRuntimeSettings:
    return LocalRuntimeSettings(stop_grace=5.0)


@pytest.fixture
def cleanup(tmp_path: Path) -> Iterator[None]:
    yield
    kill_leftovers(tmp_path)
    assert not servers_on(tmp_path)


@pytest.fixture
async def runtime(
    settings: LocalRuntimeSettings, tmp_path: Path, cleanup: None
) -> AsyncIterator[LocalRuntime]:
    rt = LocalRuntime(settings, tmp_path)
    try:
        yield rt
    finally:
        for handle in (await rt.discover()).values():
            await rt.stop(handle)
        await rt.aclose()


async def started(rt: LocalRuntime, s: InstanceSpec) -> Handle:
    handle = await rt.start(s)
    obs = await rt.wait_ready(handle, READY_TIMEOUT)
    assert obs.state is ObservedState.RUNNING, obs
    return handle


def use_chroma(port: int, create: bool) -> tuple[int, list[list[str]]]:
    """Write (when ``create``) and read vectors through the official client."""
    import chromadb
    from chromadb.config import Settings

    client = chromadb.HttpClient(
        host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False)
    )
    try:
        if create:
            coll = client.create_collection("docs")
            vectors: list[Sequence[float]] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
            coll.add(ids=["a", "b"], embeddings=vectors, documents=["first", "second"])
        else:
            coll = client.get_collection("docs")
        probe: list[Sequence[float]] = [[0.9, 0.1, 0.0]]
        result: Any = coll.query(query_embeddings=probe, n_results=1)
        return coll.count(), result["ids"]
    finally:
        client.close()  # type: ignore[attr-defined]  # on Client, not on the ClientAPI type


async def test_lifecycle_persists_data_across_restart(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    handle = await started(runtime, spec())
    assert time.monotonic() - t0 < 5
    assert handle.data["path"] == str(tmp_path / "instances" / "inst-1")
    async with httpx.AsyncClient() as http:
        beat = await http.get(f"http://127.0.0.1:{handle.data['port']}/api/v2/heartbeat")
    assert beat.status_code == 200
    # the server yields the CPU to the service: its priority is `niceness` lower
    expected = min(os.nice(0) + LocalRuntimeSettings().niceness, 19)
    assert psutil.Process(handle.data["pid"]).nice() == expected
    assert await asyncio.to_thread(use_chroma, handle.data["port"], True) == (2, [["a"]])

    await runtime.stop(handle)
    assert gone(handle.data["pid"])
    assert port_refuses(handle.data["port"])
    assert not lock_is_held(tmp_path / "instances" / "inst-1.lock")

    second = await started(runtime, spec(port=free_port(), generation=2))
    assert second.data["port"] != handle.data["port"]
    assert second.data["pid"] != handle.data["pid"]
    assert await asyncio.to_thread(use_chroma, second.data["port"], False) == (2, [["a"]])

    await runtime.delete("inst-1", second, keep_data=False)
    assert gone(second.data["pid"])
    assert not on_disk(second.data["path"])
    assert not on_disk(second.data["log"])
    assert not on_disk(second.data["lock"])
    await runtime.delete("inst-1", second, keep_data=False)  # idempotent


async def test_a_start_reports_spawned_listening_and_heartbeat_answered(
    runtime: LocalRuntime,
) -> None:
    """The local runtime's start phases: the process runs from its spawn, then listens
    on its port, then Chroma answers its heartbeat."""
    before = datetime.now(UTC)
    handle = await runtime.start(spec(port=free_port()))
    spawned = datetime.fromtimestamp(handle.data["spawned_at"], UTC)
    assert before <= spawned <= datetime.now(UTC)
    first = (await runtime.poll({"inst-1": handle}))["inst-1"]
    assert first.phase_times[StartPhase.RUNNING] == spawned
    if first.state is ObservedState.STARTING:
        assert first.phase in (StartPhase.RUNNING, StartPhase.LISTENING)
    ready = await runtime.wait_ready(handle, READY_TIMEOUT)
    assert ready.state is ObservedState.RUNNING, ready
    assert ready.phase is StartPhase.HEARTBEAT_ANSWERED
    assert ready.phase_times[StartPhase.RUNNING] == spawned
    assert spawned <= ready.phase_times[StartPhase.LISTENING]
    assert ready.phase_times.keys() <= {StartPhase.RUNNING, StartPhase.LISTENING}
    await runtime.stop(handle)
    gone = (await runtime.poll({"inst-1": handle}))["inst-1"]
    assert gone.state is ObservedState.EXITED
    assert gone.phase is None


async def test_never_two_servers_on_one_directory(
    runtime: LocalRuntime, settings: LocalRuntimeSettings, tmp_path: Path
) -> None:
    first = await started(runtime, spec())
    again = await runtime.start(spec(port=free_port()))
    assert (again.data["pid"], again.data["port"]) == (first.data["pid"], first.data["port"])

    # A restarted service that lost the handle adopts through the lock file.
    other = LocalRuntime(settings, tmp_path)
    try:
        adopted = await other.start(spec(port=free_port()))
        assert (adopted.data["pid"], adopted.data["port"]) == (
            first.data["pid"],
            first.data["port"],
        )
        assert adopted.data["create_time"] == pytest.approx(first.data["create_time"])
    finally:
        await other.aclose()

    # The launcher itself refuses a directory that is already served.
    path, lock = Path(first.data["path"]), Path(first.data["lock"])
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *server_command(settings, path, lock, "127.0.0.1", free_port()),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 5)
    assert proc.returncode == EXIT_DIR_IN_USE
    assert time.monotonic() - t0 < 2
    assert b"already served by another process" in err
    assert [p.pid for p in servers_on(path)] == [first.data["pid"]]
    record = read_lock(lock)
    assert record is not None
    assert record.pid == first.data["pid"]


async def test_port_taken_reports_port_unavailable(runtime: LocalRuntime) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        handle = await runtime.start(spec(port=squatter.getsockname()[1]))
        obs = await runtime.wait_ready(handle, READY_TIMEOUT)
    assert obs.state is ObservedState.EXITED
    assert obs.reason == "PortUnavailable"
    assert obs.message is not None
    assert "exit code 0" in obs.message
    assert "not available" in obs.message


async def test_another_server_answering_on_the_port_is_not_ready(runtime: LocalRuntime) -> None:
    squatter = await started(runtime, spec("squatter"))
    handle = await runtime.start(spec("late", port=squatter.data["port"]))
    obs = await runtime.wait_ready(handle, READY_TIMEOUT)
    assert obs.state is ObservedState.EXITED
    assert obs.reason == "PortUnavailable"
    polled = await runtime.poll({"late": handle, "squatter": squatter})
    assert polled["late"].state is ObservedState.EXITED
    assert polled["squatter"].state is ObservedState.RUNNING


async def test_crash_fires_exit_callback(runtime: LocalRuntime) -> None:
    exited = asyncio.Event()
    seen: list[str] = []

    def exit_seen(instance_id: str) -> None:
        seen.append(instance_id)
        exited.set()

    runtime.on_exit(exit_seen)
    handle = await started(runtime, spec())

    os.kill(handle.data["pid"], signal.SIGKILL)
    await asyncio.wait_for(exited.wait(), 1.0)
    assert seen == ["inst-1"]
    obs = (await runtime.poll({"inst-1": handle}))["inst-1"]
    assert obs.state is ObservedState.EXITED
    assert obs.reason == "ProcessExited"
    assert obs.message is not None
    assert "SIGKILL" in obs.message
    await runtime.stop(handle)  # already gone: no-op


async def test_new_runtime_reattaches_and_stops_a_non_child(
    runtime: LocalRuntime, settings: LocalRuntimeSettings, tmp_path: Path
) -> None:
    first = LocalRuntime(settings, tmp_path)
    handle = await started(first, spec("inst-a"))
    await first.aclose()  # the service goes away; the server must not
    assert not gone(handle.data["pid"])

    found = await runtime.discover()
    assert set(found) == {"inst-a"}
    assert (found["inst-a"].data["pid"], found["inst-a"].data["port"]) == (
        handle.data["pid"],
        handle.data["port"],
    )
    polled = await runtime.poll(found)
    assert polled["inst-a"].state is ObservedState.RUNNING
    assert polled["inst-a"].endpoint is not None
    assert polled["inst-a"].endpoint.port == handle.data["port"]

    await runtime.stop(found["inst-a"])
    assert gone(handle.data["pid"])
    assert port_refuses(handle.data["port"])
    reap(handle.data["pid"])  # it is still this test process's child
    assert await runtime.discover() == {}
    obs = (await runtime.poll(found))["inst-a"]
    assert obs.state is ObservedState.EXITED
    assert obs.message is not None
    assert "unknown" in obs.message


async def test_never_ready_then_stop_escalates_to_sigkill(tmp_path: Path, cleanup: None) -> None:
    # A "python" that never serves and ignores SIGTERM; it keeps the launcher's argv so
    # the cleanup fixture can find it by tmp_path.
    stubborn = tmp_path / "stubborn"
    stubborn.write_text(f"#!/bin/sh\ntrap '' TERM\nexec {sys.executable} -c '{SLEEP}' \"$@\"\n")
    stubborn.chmod(0o755)
    settings = LocalRuntimeSettings(python=str(stubborn), stop_grace=0.2)
    rt = LocalRuntime(settings, tmp_path)
    try:
        handle = await rt.start(spec())
        for _ in range(250):  # until the trap is set and the sleep runs
            if SLEEP in psutil.Process(handle.data["pid"]).cmdline():
                break
            await asyncio.sleep(0.02)
        obs = await rt.wait_ready(handle, 0.1)
        assert obs.state is ObservedState.STARTING
        assert (await rt.poll({"inst-1": handle}))["inst-1"].state is ObservedState.STARTING

        t0 = time.monotonic()
        await rt.stop(handle)
        assert 0.2 <= time.monotonic() - t0 < 3
        assert not psutil.pid_exists(handle.data["pid"])  # killed and reaped
        obs = (await rt.poll({"inst-1": handle}))["inst-1"]
        assert obs.state is ObservedState.EXITED
        assert obs.message is not None
        assert "SIGKILL" in obs.message
    finally:
        await rt.aclose()


async def test_logs_tail(runtime: LocalRuntime, tmp_path: Path) -> None:
    assert await runtime.logs("never", None, 10) == []
    log_file = tmp_path / "logs" / "big.log"
    log_file.parent.mkdir(parents=True)
    log_file.write_text("".join(f"line {i}\n" for i in range(50_000)))
    assert await runtime.logs("big", None, 3) == ["line 49997", "line 49998", "line 49999"]
    assert len(await runtime.logs("big", None, 20_000)) == 20_000

    handle = await started(runtime, spec())
    await runtime.stop(handle)
    lines = await runtime.logs("inst-1", handle, 1000)
    assert lines == (await asyncio.to_thread(Path(handle.data["log"]).read_text)).splitlines()
    assert any("chroma-orch" in line and "starting generation=1" in line for line in lines)


@pytest.mark.skipif(not CHROMA_SCRIPT.exists(), reason="no chroma script beside python")
async def test_chroma_cli_launcher_holds_lock_through_exec(tmp_path: Path, cleanup: None) -> None:
    settings = LocalRuntimeSettings(launcher="chroma-cli", chroma_command=str(CHROMA_SCRIPT))
    rt = LocalRuntime(settings, tmp_path)
    try:
        if not server_user_can_run(CHROMA_SCRIPT, settings):
            # e.g. a root service whose Python lives under /root: the server's account
            # cannot run the script, and the start fails saying so
            handle = await rt.start(spec())
            failed = await rt.wait_ready(handle, 30)
            assert failed.state is ObservedState.EXITED
            assert f"cannot run {CHROMA_SCRIPT}" in (failed.message or "")
            assert "Permission denied" in (failed.message or "")
            assert not lock_is_held(Path(handle.data["lock"]))
            return
        handle = await started(rt, spec())
        record = read_lock(Path(handle.data["lock"]))
        assert record is not None
        assert record.pid == handle.data["pid"]
        assert lock_is_held(Path(handle.data["lock"]))
        await rt.stop(handle)
        assert not lock_is_held(Path(handle.data["lock"]))
    finally:
        await rt.aclose()


async def test_edge_cases_of_the_contract(runtime: LocalRuntime, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="spec.port"):
        await runtime.start(InstanceSpec("x", "t", "n", 1))
    with pytest.raises(ValueError, match="invalid instance id"):
        await runtime.start(spec("../escape"))
    await runtime.delete("never-started", None, keep_data=False)
    handle = await started(runtime, spec())
    await runtime.delete("inst-1", None, keep_data=True)  # finds the server by its lock
    assert gone(handle.data["pid"])
    assert on_disk(handle.data["path"])
    await runtime.stop(handle)
    assert (await runtime.poll({"inst-1": handle}))["inst-1"].state is ObservedState.EXITED


async def test_a_server_that_cannot_be_run_is_a_spawn_failure(tmp_path: Path) -> None:
    settings = LocalRuntimeSettings(python=str(tmp_path / "no-such-python"))
    rt = LocalRuntime(settings, tmp_path)
    with pytest.raises(StartFailedError) as failed:
        await rt.start(spec())
    assert failed.value.reason == "SpawnFailed"
    assert "no-such-python" in failed.value.message
    await rt.aclose()


# -- least privilege: environment, account, file modes ----------------------------

SECRETS = {
    "CHROMA_ORCH_ADMIN_TOKEN": "co_admin-secret-never-for-servers",
    "CHROMA_ORCH_DATABASE_URL": "postgresql+asyncpg://u:db-secret@db/x",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-never-for-servers",
}
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="the service drops root only as root")


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if entry)


def ids_of(pid: int) -> dict[str, list[int]]:
    """The Uid, Gid and Groups lines of /proc/<pid>/status."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {key: [int(n) for n in fields[key].split()] for key in ("Uid", "Gid", "Groups")}


def mode(path: str | Path) -> int:
    return os.lstat(path).st_mode & 0o777


def server_uid() -> int:
    account = server_account(LocalRuntimeSettings().system_user)
    assert account is not None
    return account.uid


async def test_servers_get_a_minimal_environment(
    tmp_path: Path, cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**SECRETS, "CO_TEST_PASSED": "wanted"}.items():
        monkeypatch.setenv(name, value)
    settings = LocalRuntimeSettings(server_env=["CO_TEST_PASSED"])
    rt = LocalRuntime(settings, tmp_path)
    try:
        handle = await started(rt, spec())
        env = environ_of(handle.data["pid"])
    finally:
        await rt.delete("inst-1", None, keep_data=False)
        await rt.aclose()
    assert not [name for name in env if name.startswith(("CHROMA_ORCH_", "AWS_"))]
    assert not [value for value in SECRETS.values() if value in str(env)]
    assert env["CO_TEST_PASSED"] == "wanted"
    assert env["HOME"] == handle.data["path"]
    assert env["ANONYMIZED_TELEMETRY"] == "False"
    expected = {"PATH", "HOME", "RUST_LOG", "ANONYMIZED_TELEMETRY", "CO_TEST_PASSED"}
    expected |= {"USER", "LOGNAME"} if os.geteuid() == 0 else set()
    assert set(env) - expected <= {"LANG", "LC_ALL", "LC_CTYPE", "TZ"}


def test_the_services_settings_are_never_passed_to_servers() -> None:
    with pytest.raises(ValidationError, match="never go to servers"):
        LocalRuntimeSettings(server_env=["CHROMA_ORCH_ADMIN_TOKEN"])
    with pytest.raises(ValidationError, match="not an environment variable name"):
        LocalRuntimeSettings(server_env=["A=B"])


async def test_server_files_are_private(runtime: LocalRuntime, tmp_path: Path) -> None:
    handle = await started(runtime, spec())
    assert await asyncio.to_thread(use_chroma, handle.data["port"], True) == (2, [["a"]])
    data = Path(handle.data["path"])
    assert mode(data) == 0o700
    assert mode(data / "chroma.sqlite3") == 0o600
    assert mode(handle.data["log"]) == 0o600
    assert mode(tmp_path / "logs") == 0o700
    assert mode(tmp_path / "instances") == (0o711 if os.geteuid() == 0 else 0o700)
    for root, dirs, files in os.walk(data):
        for name in dirs + files:
            assert mode(Path(root, name)) & 0o077 == 0, Path(root, name)


@AS_ROOT
async def test_a_root_service_runs_servers_unprivileged(
    runtime: LocalRuntime, settings: LocalRuntimeSettings, tmp_path: Path
) -> None:
    handle = await started(runtime, spec())
    assert await asyncio.to_thread(use_chroma, handle.data["port"], True) == (2, [["a"]])
    ids, uid = ids_of(handle.data["pid"]), server_uid()
    assert ids["Uid"] == [uid] * 4  # real, effective, saved, filesystem
    assert 0 not in ids["Gid"]
    assert ids["Groups"] == []
    data = Path(handle.data["path"])
    for path in (data, data / "chroma.sqlite3", Path(handle.data["log"])):
        assert path.stat().st_uid == uid, path

    # the lock keeps working: a restarted service re-attaches, and the data survives
    await runtime.aclose()
    again = LocalRuntime(settings, tmp_path)
    try:
        found = await again.discover()
        assert found["inst-1"].data["pid"] == handle.data["pid"]
        await again.stop(found["inst-1"])
        restarted = await started(again, spec(generation=2))
        assert ids_of(restarted.data["pid"])["Uid"] == [uid] * 4
        assert await asyncio.to_thread(use_chroma, restarted.data["port"], False) == (2, [["a"]])
        await again.stop(restarted)
    finally:
        await again.aclose()


@AS_ROOT
@pytest.mark.parametrize("when", ["start", "discover"])
async def test_files_of_older_versions_are_tightened(
    runtime: LocalRuntime, tmp_path: Path, when: str
) -> None:
    """Older versions left 0755 directories and 0644 files, root's. A start tightens its
    server's; the first discover all (servers an older version started keep running).
    A link planted in a data directory must not redirect root's chown or chmod."""
    data, logs = tmp_path / "instances" / "inst-1", tmp_path / "logs"
    (data / "segment").mkdir(parents=True)
    (data / "segment" / "index.bin").write_bytes(b"vectors")
    logs.mkdir()
    (logs / "inst-1.log").write_text("old run\n")
    outside = tmp_path / "outside"
    outside.write_text("not the server's")
    (data / "link").symlink_to(outside)
    for path in (tmp_path / "instances", data, data / "segment", logs):
        path.chmod(0o755)
    for path in (data / "segment" / "index.bin", logs / "inst-1.log", outside):
        path.chmod(0o644)

    if when == "start":
        await runtime.stop(await started(runtime, spec()))
    else:
        assert await runtime.discover() == {}
    uid = server_uid()
    for path in (data, data / "segment"):
        assert (mode(path), path.stat().st_uid) == (0o700, uid), path
    for path in (data / "segment" / "index.bin", logs / "inst-1.log"):
        assert (mode(path), path.stat().st_uid) == (0o600, uid), path
    assert (mode(logs), mode(tmp_path / "instances")) == (0o700, 0o711)
    assert (mode(outside), outside.stat().st_uid) == (0o644, 0)


@AS_ROOT
async def test_a_data_dir_the_server_user_cannot_reach_fails_clearly(
    settings: LocalRuntimeSettings, tmp_path: Path
) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    rt = LocalRuntime(settings, closed / "data")
    try:
        with pytest.raises(StartFailedError) as failed:
            await rt.start(spec())
    finally:
        await rt.aclose()
    assert failed.value.reason == "SpawnFailed"
    assert f"directory {closed} is not searchable" in failed.value.message

"""The local runtime's specs against real Chroma servers: each instance runs its own
Chroma version, under its memory limit, with its server settings."""

from __future__ import annotations

import asyncio
import importlib.metadata
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from chroma_orch.runtimes.base import (
    Architecture,
    Endpoint,
    InstanceSpec,
    ObservedState,
    ServerSpec,
    StartFailedError,
    spec_support,
)
from chroma_orch.runtimes.heartbeat import answers
from chroma_orch.runtimes.local.launch import ServerLaunch, read_lock, server_command
from chroma_orch.runtimes.local.runtime import LocalRuntime
from chroma_orch.runtimes.local.settings import ChromaVersionLauncher
from chroma_orch.settings import LocalRuntimeSettings
from tests.chroma_versions import SECOND_VERSION, second_chroma  # noqa: F401  (fixture)
from tests.runtimes.test_local_runtime import (
    READY_TIMEOUT,
    free_port,
    kill_leftovers,
    servers_on,
)

INSTALLED = importlib.metadata.version("chromadb")


def spec(server: ServerSpec, instance_id: str = "inst-1") -> InstanceSpec:
    return InstanceSpec(
        instance_id=instance_id,
        tenant_id="t1",
        name="db",
        generation=1,
        port=free_port(),
        server=server,
    )


def make_runtime(tmp_path: Path, second: Path | None = None, **extra: object) -> LocalRuntime:
    versions = {SECOND_VERSION: ChromaVersionLauncher(python=str(second))} if second else {}
    settings = LocalRuntimeSettings(stop_grace=5.0, chroma_versions=versions, **extra)
    return LocalRuntime(settings, tmp_path)


@pytest.fixture
async def runtime(tmp_path: Path, second_chroma: Path) -> AsyncIterator[LocalRuntime]:  # noqa: F811
    rt = make_runtime(tmp_path, second_chroma)
    try:
        yield rt
    finally:
        for handle in (await rt.discover()).values():
            await rt.stop(handle)
        await rt.aclose()
        kill_leftovers(tmp_path)
        assert not servers_on(tmp_path)


def bindings_of(lock: Path) -> str:
    """The chromadb bindings library the server holding ``lock`` runs (Chroma's
    /api/v2/version answers the API's version, 1.0.0, for both)."""
    record = read_lock(lock)
    assert record is not None
    maps = Path(f"/proc/{record.pid}/maps").read_text().splitlines()
    found = {line.split()[-1] for line in maps if "chromadb_rust_bindings" in line}
    assert len(found) == 1, found
    return found.pop()


async def run(rt: LocalRuntime, instance: InstanceSpec) -> int:
    """Start ``instance`` and wait until it serves; its port."""
    handle = await rt.start(instance)
    observation = await rt.wait_ready(handle, READY_TIMEOUT)
    assert observation.state is ObservedState.RUNNING, observation
    return int(handle.data["port"])


# -- check_spec (no servers) ------------------------------------------------------


def test_the_installed_version_is_the_default_and_first(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, Path(sys.executable), default_memory_mib=512)
    assert spec_support(rt) is rt
    assert rt.chroma_versions() == [INSTALLED, SECOND_VERSION]
    check = rt.check_spec(ServerSpec())
    assert check.problems == []
    assert check.resolved == ServerSpec(chroma_version=INSTALLED, memory_mib=512)
    assert "RLIMIT_DATA" in check.enforcement["memory"]
    assert "not enforced" in check.enforcement["cpu"]


def test_a_relative_interpreter_is_the_services_cwds(
    tmp_path: Path,
    second_chroma: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(second_chroma.parent.parent.parent)  # servers start in their data dir
    relative = str(second_chroma.relative_to(second_chroma.parent.parent.parent))
    rt = make_runtime(tmp_path, Path(relative))
    assert rt._versions.launchers[SECOND_VERSION].python == str(second_chroma)  # noqa: SLF001


def test_the_default_version_is_what_local_python_has(tmp_path: Path, second_chroma: Path) -> None:  # noqa: F811
    rt = LocalRuntime(LocalRuntimeSettings(python=str(second_chroma)), tmp_path)
    assert rt.chroma_versions() == [SECOND_VERSION]


def test_refusals_say_why(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path)
    other = Architecture.ARM64 if Architecture.X86_64 == _host() else Architecture.X86_64
    check = rt.check_spec(
        ServerSpec(
            chroma_version="0.4.0",
            memory_mib=64,
            architecture=other,
            settings={"allow_reset": True, "persist_path": "/etc"},
        )
    )
    assert len(check.problems) == 4, check.problems
    assert f"Chroma 0.4.0 is not available on the local runtime (available: {INSTALLED})" in (
        check.problems
    )
    assert "64 MiB is too little memory for a local Chroma server (at least 128 MiB)" in (
        check.problems
    )
    assert any(f"not {other.value}" in p for p in check.problems)
    assert any("settings.persist_path" in p for p in check.problems)
    assert rt.check_spec(ServerSpec(cpu=512, architecture=_host())).problems == []


def test_a_version_entry_must_name_what_its_launcher_runs() -> None:
    with pytest.raises(ValueError, match="chroma_command"):
        LocalRuntimeSettings(
            launcher="chroma-cli", chroma_versions={"1.5.8": ChromaVersionLauncher(python="x")}
        )


def _host() -> Architecture:
    import os

    return Architecture.ARM64 if os.uname().machine == "aarch64" else Architecture.X86_64


# -- real servers ------------------------------------------------------------------


async def test_each_instance_runs_its_own_version(
    runtime: LocalRuntime,
    tmp_path: Path,
    second_chroma: Path,  # noqa: F811
) -> None:
    await run(runtime, spec(ServerSpec(chroma_version=SECOND_VERSION), "old"))
    await run(runtime, spec(ServerSpec(), "new"))
    second_venv = str(second_chroma.parent.parent)
    assert bindings_of(tmp_path / "instances" / "old.lock").startswith(second_venv)
    assert not bindings_of(tmp_path / "instances" / "new.lock").startswith(second_venv)
    found = await make_runtime(tmp_path).discover()  # a restarted service tells them apart
    assert found["old"].data["chroma_version"] == SECOND_VERSION
    assert found["new"].data["chroma_version"] == INSTALLED


async def test_an_unknown_version_does_not_start(runtime: LocalRuntime) -> None:
    with pytest.raises(StartFailedError, match="Chroma 9.9.9 is not available"):
        await runtime.start(spec(ServerSpec(chroma_version="9.9.9")))


def post_status(url: str, body: object = None) -> int:
    return httpx.post(url, json=body, timeout=5).status_code


def add_vectors(port: int, count: int) -> int:
    """Add ``count`` 384-dimension vectors in batches of 500; how many were added."""
    import chromadb
    from chromadb.config import Settings

    client = chromadb.HttpClient(
        host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False)
    )
    rnd = random.Random(7)
    added = 0
    try:
        collection = client.create_collection("vectors")
        for start in range(0, count, 500):
            ids = [str(i) for i in range(start, start + 500)]
            embeddings = [[rnd.random() for _ in range(384)] for _ in ids]
            collection.add(ids=ids, embeddings=embeddings)  # type: ignore[arg-type]
            added += 500
        return collection.count()
    except Exception:
        return added
    finally:
        client.close()  # type: ignore[attr-defined]


async def test_the_memory_limit_is_enforced(runtime: LocalRuntime, tmp_path: Path) -> None:
    """Chroma under 128 MiB (the smallest limit check_spec accepts) loads 5,000 vectors;
    the same launcher under 48 MiB (started by hand: check_spec refuses it) cannot."""
    port = await run(runtime, spec(ServerSpec(memory_mib=128), "roomy"))
    record = read_lock(tmp_path / "instances" / "roomy.lock")
    assert record is not None
    assert record.memory_mib == 128
    limits = await asyncio.to_thread(Path(f"/proc/{record.pid}/limits").read_text)
    assert f"Max data size             {128 * 1024 * 1024}" in limits, limits
    assert add_vectors(port, 5000) == 5000

    port = free_port()
    launch = ServerLaunch(sys.executable, "chroma", INSTALLED, memory_mib=48)
    argv = server_command(
        LocalRuntimeSettings(), tmp_path / "tight", tmp_path / "tight.lock", "127.0.0.1", port,
        launch=launch,
    )  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as tight:  # noqa: ASYNC220
        try:
            await answers_within(port, READY_TIMEOUT)
            assert add_vectors(port, 5000) < 5000
        finally:
            tight.kill()


async def answers_within(port: int, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await answers(Endpoint("127.0.0.1", port), 0.5):
        assert asyncio.get_running_loop().time() < deadline, "no heartbeat"
        await asyncio.sleep(0.05)


async def test_settings_take_effect(runtime: LocalRuntime, tmp_path: Path) -> None:
    resets = spec(ServerSpec(settings={"allow_reset": True, "max_payload_size_bytes": 4096}))
    plain = spec(ServerSpec(), "plain")
    port, plain_port = await run(runtime, resets), await run(runtime, plain)
    config = tmp_path / "instances" / "inst-1.chroma-config.yaml"
    assert config.is_file()  # beside the data directory, not in it
    assert not (tmp_path / "instances" / "plain.chroma-config.yaml").exists()

    base, plain_base = f"http://127.0.0.1:{port}/api/v2", f"http://127.0.0.1:{plain_port}/api/v2"
    assert post_status(f"{base}/reset") == 200
    assert post_status(f"{plain_base}/reset") != 200  # Chroma's default: no reset
    big = {"name": "x" * 8192}  # over 4096 bytes
    assert post_status(f"{base}/tenants", big) == 413
    assert post_status(f"{plain_base}/tenants", big) != 413

"""Pieces of the ecs runtime without AWS: batching, state mapping, rate limiting,
task definitions."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from chroma_orch.runtimes.base import (
    Endpoint,
    InstanceSpec,
    Observation,
    ObservedState,
    ServerSpec,
    StartPhase,
)
from chroma_orch.runtimes.batch import BatchLoader
from chroma_orch.runtimes.ecs.heartbeat import HeartbeatGate
from chroma_orch.runtimes.ecs.tasks import (
    cleanup_definition,
    client_token,
    observe_task,
    server_definition,
)
from chroma_orch.runtimes.ecs.throttle import RetryPolicy, rate_limiter, retrying
from chroma_orch.settings import EcsSettings
from chroma_orch.telemetry.metrics import REGISTRY


async def test_concurrent_lookups_share_batches_of_at_most_100() -> None:
    batches: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, Any]:
        batches.append(keys)
        await asyncio.sleep(0.01)
        return {key: {"k": key} for key in keys if key != "missing"}

    loader = BatchLoader(fetch, window=0.005)
    singles = [loader.load([f"t{n}"]) for n in range(150)]
    bulk = loader.load([f"t{n}" for n in range(100, 250)] + ["missing"])
    results = await asyncio.gather(*singles, bulk)
    assert results[0] == {"t0": {"k": "t0"}}
    assert results[-1]["missing"] is None
    assert sorted(len(b) for b in batches) == [51, 100, 100]  # 251 distinct keys
    await loader.aclose()


def _task(**fields: Any) -> dict[str, Any]:
    eni = {
        "type": "ElasticNetworkInterface",
        "details": [{"name": "privateIPv4Address", "value": "10.0.0.7"}],
    }
    other = {"type": "Other", "details": [{"name": "privateIPv4Address", "value": "1.2.3.4"}]}
    return {"attachments": [other, eni], "desiredStatus": "RUNNING"} | fields


@pytest.mark.parametrize(
    ("status", "desired", "state"),
    [
        ("PROVISIONING", "RUNNING", ObservedState.STARTING),
        ("PENDING", "RUNNING", ObservedState.STARTING),
        ("ACTIVATING", "RUNNING", ObservedState.STARTING),
        ("RUNNING", "RUNNING", ObservedState.RUNNING),
        ("RUNNING", "STOPPED", ObservedState.STOPPING),
        ("DEACTIVATING", "STOPPED", ObservedState.STOPPING),
        ("STOPPING", "STOPPED", ObservedState.STOPPING),
        ("DEPROVISIONING", "STOPPED", ObservedState.STOPPING),
        ("STOPPED", "STOPPED", ObservedState.EXITED),
    ],
)
def test_last_status_maps_onto_observed_states(
    status: str, desired: str, state: ObservedState
) -> None:
    observation = observe_task(_task(lastStatus=status, desiredStatus=desired), 8000)
    assert observation.state is state
    if state is ObservedState.RUNNING:
        assert observation.endpoint is not None
        assert observation.endpoint.url == "http://10.0.0.7:8000"  # by type, not position


def test_stopped_task_reports_stop_code_and_reason() -> None:
    container = {"name": "chroma", "exitCode": 137, "reason": "OutOfMemoryError"}
    task = _task(
        lastStatus="STOPPED",
        stopCode="EssentialContainerExited",
        stoppedReason="Essential container in task exited",
        containers=[container],
    )
    observation = observe_task(task, 8000)
    assert observation.reason == "EssentialContainerExited"
    assert observation.message is not None
    assert "Essential container in task exited" in observation.message
    assert "137" in observation.message
    assert observe_task(None, 8000).reason == "TaskMissing"


def test_client_token_fits_ecs_limit() -> None:
    spec = InstanceSpec("i", "t", "n", 1, start_token="x" * 100)
    assert len(client_token(spec)) <= 64
    assert client_token(spec) == client_token(spec)
    assert client_token(InstanceSpec("i", "t", "n", 1, start_token="abc-1-0")) == "abc-1-0"


async def test_rate_limiter_spreads_a_burst() -> None:
    limiter = rate_limiter(burst=5, rate=100.0)
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(15)))
    assert time.monotonic() - started >= 0.09  # 10 tokens beyond the burst at 100/s


class _Throttled(Exception):
    response = {
        "Error": {"Code": "ThrottlingException"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }


class _Rejected(Exception):
    response = {"Error": {"Code": "ClientException"}, "ResponseMetadata": {"HTTPStatusCode": 400}}


async def test_retrying_retries_throttles_but_not_rejections() -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise _Throttled
        return "ok"

    policy = RetryPolicy(attempts=5, base=0.001, cap=0.002)
    labels = {"operation": "Flaky", "kind": "throttle"}
    before = REGISTRY.get_sample_value("chroma_orch_aws_errors_total", labels) or 0.0
    assert await retrying(flaky, policy, what="Flaky") == "ok"
    assert len(attempts) == 3
    after = REGISTRY.get_sample_value("chroma_orch_aws_errors_total", labels)
    assert after == before + 2  # every failed attempt is counted

    async def rejected() -> str:
        attempts.append(1)
        raise _Rejected

    with pytest.raises(_Rejected):
        await retrying(rejected, policy)
    assert len(attempts) == 4

    async def always_throttled() -> str:
        attempts.append(1)
        raise _Throttled

    with pytest.raises(_Throttled):
        await retrying(always_throttled, policy)
    assert len(attempts) == 9  # gives up after policy.attempts


async def test_heartbeat_gate_believes_running_once_the_server_answers() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gate = HeartbeatGate(timeout=1.0)
    up = Observation(ObservedState.RUNNING, endpoint=Endpoint("127.0.0.1", port))
    observed = {"a": up}
    await gate.confirm(observed, {"a": "arn-a"})
    assert observed["a"].state is ObservedState.RUNNING
    assert observed["a"].phase is StartPhase.HEARTBEAT_ANSWERED
    answered_at = observed["a"].phase_times[StartPhase.HEARTBEAT_ANSWERED]
    server.close()
    await server.wait_closed()
    observed = {"a": up}
    await gate.confirm(observed, {"a": "arn-a"})  # confirmed once: a blip is no crash
    assert observed["a"].state is ObservedState.RUNNING
    assert observed["a"].phase_times[StartPhase.HEARTBEAT_ANSWERED] == answered_at
    silent = {"b": Observation(ObservedState.RUNNING, endpoint=Endpoint("127.0.0.1", port))}
    await gate.confirm(silent, {"b": "arn-b"})
    assert silent["b"].state is ObservedState.STARTING
    assert silent["b"].phase is None  # what ECS said (nothing here), no heartbeat


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.mark.parametrize(
    ("fields", "phase"),
    [
        ({"lastStatus": "PROVISIONING", "createdAt": _at(1)}, StartPhase.PROVISIONING),
        ({"lastStatus": "PENDING", "connectivityAt": _at(2)}, StartPhase.PENDING),
        ({"lastStatus": "PENDING", "pullStartedAt": _at(3)}, StartPhase.PULLING),
        (
            {"lastStatus": "PENDING", "pullStartedAt": _at(3), "pullStoppedAt": _at(4)},
            StartPhase.PULLED,
        ),
        ({"lastStatus": "ACTIVATING", "pullStoppedAt": _at(4)}, StartPhase.PULLED),
        ({"lastStatus": "RUNNING", "startedAt": _at(5)}, StartPhase.RUNNING),
        ({"lastStatus": "RUNNING"}, StartPhase.RUNNING),  # moto: no timestamps
    ],
)
def test_start_phases_come_from_the_task_status_and_timestamps(
    fields: dict[str, Any], phase: StartPhase
) -> None:
    """Developer guide "Amazon ECS task lifecycle"; the times are the task's own."""
    observation = observe_task(_task(**fields), 8000)
    assert observation.phase is phase
    stamps = {k: v for k, v in fields.items() if k != "lastStatus"}
    assert sorted(observation.phase_times.values()) == sorted(stamps.values())


def test_task_definitions_carry_none_of_the_services_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secrets = {"CHROMA_ORCH_ADMIN_TOKEN": "co_admin-secret", "AWS_SECRET_ACCESS_KEY": "aws-s3cret"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    settings = EcsSettings(efs_file_system_id="fs-0123456789abcdef0")
    spec = ServerSpec(cpu=512, memory_mib=1024, chroma_version="1.5.9")
    server = server_definition(settings, spec, "fsap-0123456789abcdef0")
    (container,) = server["containerDefinitions"]
    assert container["environment"] == [{"name": "ANONYMIZED_TELEMETRY", "value": "False"}]
    for definition in (server, cleanup_definition(settings, "fsap-0123456789abcdef0")):
        text = json.dumps(definition)
        assert not [value for value in secrets.values() if value in text]

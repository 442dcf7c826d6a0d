"""Specs on ECS (docs/ecs.md "Specs and versions"): every refusal of ``check_spec``
word for word, a start on a non-default spec registers a definition with its size,
architecture, image tag and server settings, definitions are registered once per
distinct spec (and none after a restart), and an old ``{}`` spec keeps the family
it always had."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chroma_orch.runtimes.base import (
    Architecture,
    InstanceSpec,
    ServerSpec,
    StartFailedError,
    spec_support,
)
from chroma_orch.runtimes.ecs.runtime import EcsRuntime
from chroma_orch.runtimes.ecs.settings import EcsSettings
from chroma_orch.runtimes.ecs.specs import check_spec, chroma_versions
from chroma_orch.runtimes.ecs.tasks import server_definition
from tests.e2e.service import free_port
from tests.ecs.aws_behaviour import AwsBehaviour
from tests.ecs.conftest import CLUSTER, aws_client
from tests.helpers import wait_for

OLD_DEFAULT_FAMILY = "chroma-orch-1ca93f758e6962ec"
"""The family main's code (before specs) registered for every instance on default
settings: an upgraded service must find it, not register another."""


@pytest.mark.parametrize(
    ("settings", "spec", "problem"),
    [
        (
            {},
            ServerSpec(cpu=256, memory_mib=4096),
            "4096 MiB is not valid with 0.25 vCPU on Fargate "
            "(0.25 vCPU allows 512, 1024 or 2048 MiB)",
        ),
        (
            {},
            ServerSpec(cpu=4096),  # the default 2048 MiB is too little for 4 vCPU
            "2048 MiB is not valid with 4 vCPU on Fargate "
            "(4 vCPU allows 8192-30720 MiB in 1024 MiB steps)",
        ),
        (
            {},
            ServerSpec(cpu=300, memory_mib=1024),
            "300 CPU units is not a Fargate task size (Fargate takes 256 (0.25 vCPU), "
            "512 (0.5 vCPU), 1024 (1 vCPU), 2048 (2 vCPU), 4096 (4 vCPU), 8192 (8 vCPU), "
            "16384 (16 vCPU))",
        ),
        (
            {},
            ServerSpec(chroma_version="1.5.9; rm -rf /"),
            "chroma_version '1.5.9; rm -rf /' is not a valid image tag (letters, digits, "
            "'_', '.' and '-', at most 128, not starting with '.' or '-')",
        ),
        (
            {},
            ServerSpec(chroma_version="." + "1" * 5),
            "chroma_version '.11111' is not a valid image tag (letters, digits, "
            "'_', '.' and '-', at most 128, not starting with '.' or '-')",
        ),
        (
            {"chroma_versions": ["1.5.8", "1.5.9"]},
            ServerSpec(chroma_version="1.4.0"),
            "chroma_version 1.4.0 is not offered on ECS (offered: 1.5.9, 1.5.8)",
        ),
        (
            {"image": "example.com/chroma@sha256:" + "a" * 64},
            ServerSpec(chroma_version="1.5.8"),
            "chroma_version 1.5.8 is not available: this service's image is pinned by "
            "digest and runs 1.5.9 only",
        ),
        (
            {},
            ServerSpec(settings={"persist_path": "/elsewhere"}),
            "settings.persist_path is not a server setting a spec may set (allowed: "
            "allow_reset, max_payload_size_bytes, cors_allow_origins)",
        ),
        (
            {},
            ServerSpec(settings={"max_payload_size_bytes": 10}),
            "settings.max_payload_size_bytes: Input should be greater than or equal to 1024",
        ),
    ],
)
def test_every_refusal_is_one_sentence(
    settings: dict[str, Any], spec: ServerSpec, problem: str
) -> None:
    assert check_spec(EcsSettings(**settings), spec).problems == [problem]


def test_a_spec_resolves_to_the_settings_defaults() -> None:
    settings = EcsSettings(cpu=512, memory=1024, cpu_architecture="ARM64", image_tag="1.5.8")
    checked = check_spec(settings, ServerSpec())
    assert checked.problems == []
    assert checked.resolved == ServerSpec(512, 1024, Architecture.ARM64, "1.5.8", {})
    assert set(checked.enforcement) == {"cpu", "memory"}
    asked = ServerSpec(cpu=2048, memory_mib=16384, architecture=Architecture.X86_64)
    assert check_spec(settings, asked).resolved == ServerSpec(
        2048, 16384, Architecture.X86_64, "1.5.8", {}
    )
    explicit = EcsSettings(image="registry.example/chroma:1.5.7")
    assert chroma_versions(explicit) == ["1.5.7"]
    assert chroma_versions(EcsSettings(chroma_versions=["1.5.8", "1.5.9"])) == ["1.5.9", "1.5.8"]
    (container,) = server_definition(explicit, ServerSpec(chroma_version="1.5.9"))[
        "containerDefinitions"
    ]
    assert container["image"] == "registry.example/chroma:1.5.9"


def test_an_old_empty_spec_keeps_its_family_and_so_does_the_same_spec_resolved() -> None:
    settings = EcsSettings()
    assert server_definition(settings, ServerSpec())["family"] == OLD_DEFAULT_FAMILY
    resolved = check_spec(settings, ServerSpec()).resolved
    assert server_definition(settings, resolved)["family"] == OLD_DEFAULT_FAMILY
    with_settings = ServerSpec(settings={"allow_reset": True})
    assert server_definition(settings, with_settings)["family"] != OLD_DEFAULT_FAMILY


async def test_the_config_command_runs_chroma_with_the_specs_settings(tmp_path: Path) -> None:
    """The container's entryPoint and command, run here (less the image's dumb-init)
    against the real ``chroma``: the server takes the settings (allow_reset) and the
    data path and port of the task."""
    port = free_port()
    settings = EcsSettings(data_mount=str(tmp_path / "data"), container_port=port)
    spec = ServerSpec(settings={"allow_reset": True})
    (container,) = server_definition(settings, spec)["containerDefinitions"]
    assert container["entryPoint"][:2] == ["dumb-init", "--"]  # the image's own init
    env = {e["name"]: e["value"] for e in container["environment"]}
    path = os.environ.get("PATH", "")
    env["PATH"] = f"{Path(sys.executable).parent}:{path}"
    argv = container["entryPoint"][2:] + container["command"]
    process = await asyncio.create_subprocess_exec(*argv, env=env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def up() -> bool:
                try:
                    return (await http.get("/api/v2/heartbeat")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up, timeout=60)
            reset = await http.post("/api/v2/reset")
            assert reset.status_code == 200, reset.text  # refused without allow_reset
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
    assert (tmp_path / "data" / "chroma.sqlite3").exists()


@pytest.fixture
def settings(ecs_settings: EcsSettings) -> EcsSettings:
    return ecs_settings.model_copy(update={"storage": "ephemeral"})  # no volumes: fewer calls


@pytest.fixture
async def runtime(settings: EcsSettings) -> AsyncIterator[EcsRuntime]:
    runtime = EcsRuntime(settings)
    try:
        yield runtime
    finally:
        await runtime.aclose()


def _spec(server: ServerSpec) -> InstanceSpec:
    instance_id = str(uuid.uuid4())
    return InstanceSpec(
        instance_id=instance_id,
        tenant_id=str(uuid.uuid4()),
        name="main",
        generation=1,
        options=server.to_json(),
        server=server,
        start_token=f"{uuid.UUID(instance_id).hex}-1-0",
    )


async def _definition_of(moto_url: str, task_arn: str) -> dict[str, Any]:
    async with aws_client(moto_url, "ecs") as ecs:
        (task,) = (await ecs.describe_tasks(cluster=CLUSTER, tasks=[task_arn]))["tasks"]
        answer = await ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])
    return dict(answer["taskDefinition"])


async def test_a_start_runs_the_task_on_its_own_spec(
    runtime: EcsRuntime, moto_url: str, aws: AwsBehaviour
) -> None:
    assert spec_support(runtime) is runtime
    server = ServerSpec(
        cpu=512,
        memory_mib=4096,
        architecture=Architecture.ARM64,
        chroma_version="1.5.8",
        settings={"allow_reset": True, "max_payload_size_bytes": 1048576},
    )
    handle = await runtime.start(_spec(server))

    definition = await _definition_of(moto_url, str(handle.data["task_arn"]))
    assert (definition["cpu"], definition["memory"]) == ("512", "4096")
    assert definition["runtimePlatform"]["cpuArchitecture"] == "ARM64"
    (container,) = definition["containerDefinitions"]
    assert container["image"].endswith("/chromadb/chroma:1.5.8")
    env = {e["name"]: e["value"] for e in container["environment"]}
    config = json.loads(env["ORCH_SERVER_CONFIG"])
    assert config == {
        "allow_reset": True,
        "max_payload_size_bytes": 1048576,
        "persist_path": runtime.settings.data_mount,
        "listen_address": "0.0.0.0",
        "port": runtime.settings.container_port,
    }
    (request,) = aws.run_task_requests
    (override,) = request["overrides"]["containerOverrides"]
    assert override["command"] == container["command"]  # the config script, not flags


async def test_a_spec_the_settings_no_longer_allow_fails_its_start(runtime: EcsRuntime) -> None:
    with pytest.raises(StartFailedError) as failed:
        await runtime.start(_spec(ServerSpec(cpu=256, memory_mib=4096)))
    assert failed.value.reason == "InvalidSpec"
    assert "4096 MiB is not valid with 0.25 vCPU on Fargate" in failed.value.message


async def test_one_definition_per_distinct_spec_and_none_after_a_restart(
    runtime: EcsRuntime, settings: EcsSettings, aws: AwsBehaviour
) -> None:
    """30 instances on 3 specs register 3 definitions (RegisterTaskDefinition: burst
    20, 1/s refill); a restarted service finds them and registers none."""
    specs = [
        ServerSpec(),  # an old row's {}: today's definition
        ServerSpec(cpu=2048, memory_mib=8192),
        ServerSpec(chroma_version="1.5.8", settings={"allow_reset": True}),
    ]
    await asyncio.gather(*(runtime.start(_spec(specs[n % 3])) for n in range(30)))
    assert aws.seen["RegisterTaskDefinition"] == 3
    assert aws.seen["DescribeTaskDefinition"] == 3  # once per family per process

    restarted = EcsRuntime(settings)
    try:
        resolved = check_spec(settings, ServerSpec()).resolved  # a new row's spec
        starts = [*(_spec(s) for s in specs * 3), _spec(resolved)]
        await asyncio.gather(*(restarted.start(spec) for spec in starts))
    finally:
        await restarted.aclose()
    assert aws.seen["RegisterTaskDefinition"] == 3
    assert aws.launched == 40


async def test_an_old_instance_keeps_the_definition_main_registered(
    runtime: EcsRuntime, moto_url: str, aws: AwsBehaviour
) -> None:
    """An instance started before the upgrade left its definition registered (by main's
    code: the same family, ``test_an_old_empty_spec_keeps_its_family...``); after the
    upgrade, its ``{}`` spec finds it and registers nothing."""
    old = server_definition(runtime.settings, ServerSpec())
    async with aws_client(moto_url, "ecs") as ecs:  # straight to moto: the old service
        await ecs.register_task_definition(**old)
    registered_before = aws.seen["RegisterTaskDefinition"]

    handle = await runtime.start(_spec(ServerSpec.from_json({})))

    definition = await _definition_of(moto_url, str(handle.data["task_arn"]))
    assert definition["family"] == old["family"]
    assert aws.seen["RegisterTaskDefinition"] == registered_before == 0

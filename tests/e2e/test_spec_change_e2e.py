"""Instance specs on the real local runtime: an instance launched on the second Chroma
version with a memory limit runs so; a PATCH of its spec is a new generation, applied
by a restart with the data kept; on a stopped instance it waits for the next start."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.chroma_versions import SECOND_VERSION
from tests.e2e.service import Service, chroma_processes
from tests.e2e.upgrade_helpers import read_data, served_version, write_data
from tests.helpers import create_tenant, wait_phase

INSTALLED = "1.5.9"


def _data_limit_mib(data_dir: Path, instance_id: str) -> int:
    """The RLIMIT_DATA of the instance's one server process, in MiB."""
    (process,) = chroma_processes(data_dir)[instance_id]
    limits = Path(f"/proc/{process.pid}/limits").read_text().splitlines()
    (line,) = [line for line in limits if line.startswith("Max data size")]
    return int(line.split()[3]) // (1024 * 1024)


async def _patched(http: httpx.AsyncClient, instance_id: str, spec: dict[str, Any]) -> Any:
    answer = await http.patch(f"/v1/instances/{instance_id}", json={"spec": spec})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_spec_runs_and_a_patch_restarts_on_the_new_one(upgrade_service: Service) -> None:
    service = upgrade_service
    async with service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    async with service.client(token) as http:
        created = await http.post(
            "/v1/instances",
            json={"name": "db", "spec": {"chroma_version": SECOND_VERSION, "memory_mib": 256}},
        )
        assert created.status_code == 202, created.text
        instance_id = created.json()["instance"]["id"]
        running = await wait_phase(http, instance_id, "running")
        assert running["spec"]["chroma_version"] == SECOND_VERSION
        assert running["spec"]["memory_mib"] == 256
    assert served_version(service.data_dir, instance_id) == SECOND_VERSION
    assert _data_limit_mib(service.data_dir, instance_id) == 256
    base = f"{service.url}/i/{instance_id}"
    await asyncio.to_thread(write_data, base, token)
    before = await asyncio.to_thread(read_data, base, token)

    async with service.client(token) as http:
        patched = await _patched(
            http, instance_id, {"chroma_version": INSTALLED, "memory_mib": 512}
        )
        assert patched["generation"] == running["generation"] + 1
        assert patched["spec"]["chroma_version"] == INSTALLED
        after = await wait_phase(http, instance_id, "running", timeout=60)
        assert after["observed_generation"] == patched["generation"]
    assert served_version(service.data_dir, instance_id) == "installed"
    assert _data_limit_mib(service.data_dir, instance_id) == 512
    assert await asyncio.to_thread(read_data, base, token) == before

    async with service.client(token) as http:
        assert (await http.post(f"/v1/instances/{instance_id}/stop")).status_code == 202
        await wait_phase(http, instance_id, "stopped")
        stopped = await _patched(http, instance_id, {"memory_mib": 384})
        assert stopped["desired_state"] == "stopped"
        assert not chroma_processes(service.data_dir).get(instance_id)  # nothing started
        assert (await http.post(f"/v1/instances/{instance_id}/start")).status_code == 202
        await wait_phase(http, instance_id, "running")
    assert _data_limit_mib(service.data_dir, instance_id) == 384
    assert await asyncio.to_thread(read_data, base, token) == before

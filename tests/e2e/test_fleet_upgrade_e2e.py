"""Fleet upgrades in waves end to end: the real service upgrades real Chroma servers
holding real data, wave after wave; a wave whose upgrades roll back halts the rollout,
and no later wave starts."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.chroma_versions import SECOND_VERSION
from tests.e2e.service import Service
from tests.e2e.upgrade_helpers import BLIND, read_data, served_version, write_data
from tests.helpers import create_tenant, wait_for


async def _fleet(service: Service, count: int) -> list[tuple[str, str, tuple[int, list[str]]]]:
    """``count`` running instances of two tenants, each with data: (token, id, data)."""
    fleet = []
    async with service.client() as admin:
        tokens = [(await create_tenant(admin, name))[1] for name in ("acme", "globex")]
    for n in range(count):
        token = tokens[n % 2]
        async with service.client(token) as http:
            created = await http.post("/v1/instances", json={"name": f"db{n}"})
            instance_id = created.json()["instance"]["id"]
            waited = await http.get(
                f"/v1/instances/{instance_id}/wait", params={"phase": "running"}
            )
            assert waited.json()["phase"] == "running"
        base = f"{service.url}/i/{instance_id}"
        await asyncio.to_thread(write_data, base, token, 20 + n)
        fleet.append((token, instance_id, await asyncio.to_thread(read_data, base, token)))
    return fleet


def _counted(wave: dict[str, Any]) -> dict[str, int]:
    return {state: n for state, n in wave["counts"].items() if n}


async def _until_over(admin: httpx.AsyncClient, rollout_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = (await admin.get(f"/v1/rollouts/{rollout_id}")).json()
        return body if body["state"] in ("succeeded", "halted", "cancelled") else None

    over: dict[str, Any] = await wait_for(probe, timeout=180, interval=0.2)
    return over


async def test_a_fleet_upgrade_runs_in_waves_and_keeps_every_tenants_data(
    upgrade_service: Service,
) -> None:
    service = upgrade_service
    fleet = await _fleet(service, 4)
    async with service.client() as admin:
        asked = await admin.post(
            "/v1/upgrades",
            json={"chroma_version": SECOND_VERSION, "waves": [25, 50, 100], "max_concurrent": 2},
        )
        assert asked.status_code == 202, asked.text
        over = await _until_over(admin, asked.json()["id"])
    assert over["state"] == "succeeded", over
    assert [w["members"] for w in over["waves"]] == [1, 1, 2]
    assert all(_counted(w) == {"succeeded": w["members"]} for w in over["waves"]), over
    for token, instance_id, data in fleet:
        assert served_version(service.data_dir, instance_id) == SECOND_VERSION
        base = f"{service.url}/i/{instance_id}"
        assert await asyncio.to_thread(read_data, base, token) == data


async def test_a_wave_over_its_error_budget_halts_the_rollout(upgrade_service: Service) -> None:
    service = upgrade_service
    fleet = await _fleet(service, 4)
    async with service.client() as admin:
        asked = await admin.post(
            "/v1/upgrades",
            json={"chroma_version": BLIND, "waves": [50, 100], "error_budget": 0},
        )
        assert asked.status_code == 202, asked.text
        over = await _until_over(admin, asked.json()["id"])
        members = (await admin.get(f"/v1/rollouts/{over['id']}/members")).json()
    assert over["state"] == "halted", over
    assert over["waves"][0]["counts"].get("rolled_back", 0) >= 1, over
    assert _counted(over["waves"][1]) == {"waiting": 2}, over  # never started
    items = members["items"] if isinstance(members, dict) else members
    assert all(m["upgrade_id"] is None for m in items if m["wave"] == 1)
    for token, instance_id, data in fleet:  # rolled back or never touched: all as they were
        assert served_version(service.data_dir, instance_id) == "installed"
        base = f"{service.url}/i/{instance_id}"
        assert await asyncio.to_thread(read_data, base, token) == data

"""``chroma-orch instances upgrade | upgrades`` as a subprocess against a live service
whose local runtime knows a second real Chroma version and a broken one (real
PostgreSQL, real Chroma servers, real data written and read with chromadb)."""

from __future__ import annotations

import asyncio
import json

from tests.chroma_versions import SECOND_VERSION
from tests.cli.conftest import run_cli
from tests.e2e.service import Service, running_instance
from tests.e2e.upgrade_helpers import BLIND, read_data, write_data

MISSING = "collection default_database/docs is missing"


async def _with_data(service: Service) -> tuple[str, str, tuple[int, list[str]]]:
    token, instance_id = await running_instance(service)
    base = f"{service.url}/i/{instance_id}"
    await asyncio.to_thread(write_data, base, token)
    return token, instance_id, await asyncio.to_thread(read_data, base, token)


async def test_an_upgrade_waits_shows_progress_and_is_listed(upgrade_service: Service) -> None:
    service, url = upgrade_service, upgrade_service.url
    token, instance_id, before = await _with_data(service)
    unknown = await run_cli(
        "instances", "upgrade", "main", "--version", "9.9.9", url=url, token=token
    )
    assert unknown.code == 2, unknown.stderr  # 422 invalid_spec
    assert "9.9.9" in unknown.stderr

    done = await run_cli(
        "instances", "upgrade", "main", "--version", SECOND_VERSION, "--wait", url=url, token=token
    )
    assert done.code == 0, done.stderr
    assert done.stdout.endswith(f"-> {SECOND_VERSION}) is succeeded\n"), done.stdout
    progress = [line for line in done.stderr.splitlines() if line.startswith("main: upgrade")]
    assert progress[-1] == f"main: upgrade to {SECOND_VERSION}: succeeded", done.stderr
    assert f"main: upgrade to {SECOND_VERSION}: probing" in progress, done.stderr
    base = f"{service.url}/i/{instance_id}"
    assert await asyncio.to_thread(read_data, base, token) == before

    listed = await run_cli("instances", "upgrades", "main", "--json", url=url, token=token)
    assert listed.code == 0, listed.stderr
    [upgrade] = json.loads(listed.stdout)
    assert (upgrade["phase"], upgrade["to_version"]) == ("succeeded", SECOND_VERSION)
    table = await run_cli("instances", "upgrades", "main", url=url, token=token)
    header, row = table.stdout.splitlines()
    assert header.split() == ["ID", "FROM", "TO", "PHASE", "REASON", "AGE"]
    assert row.split()[:5] == [upgrade["id"], upgrade["from_version"], SECOND_VERSION,
                               "succeeded", "-"]  # fmt: skip
    one = await run_cli("instances", "upgrades", instance_id, upgrade["id"], url=url, token=token)
    assert one.stdout.startswith(f"upgrade {upgrade['id']} of instance {instance_id} ("), one
    instances = await run_cli("instances", "ls", url=url, token=token)
    assert instances.stdout.splitlines()[1].split()[3] == SECOND_VERSION, instances.stdout

    back = await run_cli("instances", "upgrade", instance_id, "--version", upgrade["from_version"],
                         "--wait", "--poll", "--json", url=url, token=token)  # fmt: skip
    assert back.code == 0, back.stderr  # polled, and the upgrade as JSON
    assert json.loads(back.stdout)["phase"] == "succeeded"
    assert await asyncio.to_thread(read_data, base, token) == before

    again = await run_cli("instances", "upgrade", "main", "--version", upgrade["from_version"],
                          url=url, token=token)  # fmt: skip
    assert again.code == 5, again.stderr  # 409: it runs that version already


async def test_a_rolled_back_upgrade_exits_9_with_what_differed(upgrade_service: Service) -> None:
    service, url = upgrade_service, upgrade_service.url
    token, instance_id, before = await _with_data(service)
    done = await run_cli(
        "instances", "upgrade", "main", "--version", BLIND, "--wait", url=url, token=token
    )
    assert done.code == 9, (done.stdout, done.stderr)
    first, *differences = done.stdout.splitlines()
    assert f"-> {BLIND}) is rolled_back: ParityMismatch: " in first, first
    assert f"  differs: {MISSING}" in differences, done.stdout
    assert f"error: upgrade to {BLIND} rolled_back: ParityMismatch: " in done.stderr
    assert f"main: upgrade to {BLIND}: rolling_back" in done.stderr, done.stderr
    shown = await run_cli("instances", "get", "main", "--json", url=url, token=token)
    instance = json.loads(shown.stdout)
    assert instance["failure"]["reason"] == "UpgradeRolledBack", instance
    assert instance["spec"]["chroma_version"] != BLIND
    base = f"{service.url}/i/{instance_id}"
    assert await asyncio.to_thread(read_data, base, token) == before

    asked = await run_cli("instances", "upgrade", "main", "--version", SECOND_VERSION, "--json",
                          url=url, token=token)  # fmt: skip
    assert asked.code == 0, asked.stderr
    upgrade = json.loads(asked.stdout)
    assert (upgrade["phase"], upgrade["to_version"]) == ("pending", SECOND_VERSION)
    text = await run_cli("instances", "upgrades", "main", url=url, token=token)
    rows = [line.split() for line in text.stdout.splitlines()[1:]]
    assert rows[0][0] == upgrade["id"]  # newest first
    assert rows[1][3:5] == ["rolled_back", "ParityMismatch"], text.stdout

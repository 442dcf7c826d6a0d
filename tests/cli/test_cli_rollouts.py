"""``chroma-orch restarts create | upgrades create | rollouts ...`` as a subprocess
against a live service (real PostgreSQL, real Chroma servers, the rollout loop)."""

from __future__ import annotations

import json

from tests.cli.conftest import run_cli
from tests.e2e.service import Service, running_instance


async def test_a_rolling_restart_waits_and_shows_progress(service: Service) -> None:
    token, instance_id = await running_instance(service)
    url = service.url
    done = await run_cli(
        "restarts", "create", "--tenant", "acme", "--max-concurrent", "2", "--wait", url=url
    )
    assert done.code == 0, done.stderr
    assert "rollout" in done.stdout
    assert "succeeded, wave 1/1: 1/1 done" in done.stdout
    progress = [line for line in done.stderr.splitlines() if line.startswith("rollout ")]
    assert progress[-1].endswith(": succeeded, wave 1/1: 1/1 done, 0 active, 0 failed")
    async with service.client(token) as http:
        instance = (await http.get(f"/v1/instances/{instance_id}")).json()
    assert (instance["generation"], instance["observed_generation"]) == (2, 2)
    assert instance["phase"] == "running"

    listed = await run_cli("rollouts", "ls", "--json", url=url)
    assert listed.code == 0, listed.stderr
    rollouts = json.loads(listed.stdout)
    assert [r["state"] for r in rollouts] == ["succeeded"]
    shown = await run_cli("rollouts", "show", rollouts[0]["id"], url=url)
    assert "wave 1 (to 100%): 1 succeeded" in shown.stdout
    again = await run_cli("rollouts", "pause", rollouts[0]["id"], url=url)
    assert again.code == 5, again.stderr  # 409: it has ended
    assert "cannot pause a rollout that is succeeded" in again.stderr


async def test_refusals_and_exit_codes(service: Service) -> None:
    token, _ = await running_instance(service)
    url = service.url
    bad = await run_cli("restarts", "create", "--waves", "50,10,100", url=url)
    assert bad.code == 2, bad.stderr
    assert "strictly increasing" in bad.stderr
    label = await run_cli("restarts", "create", "--label", "tier", url=url)
    assert label.code == 2
    assert "KEY=VALUE" in label.stderr
    tenant = await run_cli("upgrades", "create", "--version", "1.5.9", url=url, token=token)
    assert tenant.code == 3, tenant.stderr  # 403
    missing = await run_cli("rollouts", "show", "00000000-0000-0000-0000-000000000000", url=url)
    assert missing.code == 4
    nobody = await run_cli("restarts", "create", "--label", "tier=none", "--json", url=url)
    assert nobody.code == 0, nobody.stderr
    assert json.loads(nobody.stdout)["members"] == 0

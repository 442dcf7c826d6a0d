"""``chroma-orch instances delete --purge | undelete | ls --deleted`` and
``chroma-orch snapshots schedule set|get|rm`` as a subprocess against a live service
(real PostgreSQL, real Chroma servers, the local snapshot store)."""

from __future__ import annotations

import json

from tests.cli.conftest import run_cli
from tests.conftest import ADMIN_TOKEN
from tests.e2e.service import Service, running_instance


async def test_delete_list_deleted_undelete_and_purge(service: Service) -> None:
    token, instance_id = await running_instance(service)
    url = service.url
    deleted = await run_cli("instances", "delete", "main", "--wait", url=url, token=token)
    assert deleted.code == 0, deleted.stderr
    table = await run_cli("instances", "ls", "--deleted", url=url, token=token)
    assert table.code == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "PHASE", "CHROMA", "SIZE", "ENDPOINT", "AGE"]
    assert [row.split()[:3] for row in rows] == [["main", instance_id, "deleted"]]
    live = await run_cli("instances", "ls", url=url, token=token)
    assert (live.stdout, live.stderr.strip()) == ("", "no instances")

    back = await run_cli("instances", "undelete", "main", "--wait", "--json", url=url, token=token)
    assert back.code == 0, back.stderr
    instance = json.loads(back.stdout)
    assert (instance["id"], instance["phase"]) == (instance_id, "running")
    none_deleted = await run_cli("instances", "ls", "--deleted", "--json", url=url, token=token)
    assert json.loads(none_deleted.stdout) == []

    purged = await run_cli("instances", "delete", "main", "--purge", "--wait", url=url, token=token)
    assert purged.code == 0, purged.stderr
    listed = await run_cli("instances", "ls", "--deleted", "--json", url=url, token=token)
    assert [i["id"] for i in json.loads(listed.stdout)] == [instance_id]
    again = await run_cli("instances", "undelete", instance_id, url=url, token=token)
    assert again.code == 5, (again.stdout, again.stderr)  # no pre_delete snapshot: 409
    assert "pre_delete" in again.stderr


async def test_usage_errors_and_missing_ones(service: Service) -> None:
    token, _ = await running_instance(service)
    url = service.url
    both = await run_cli("instances", "delete", "main", "--purge", "--keep-data", url=url)
    assert both.code == 2, both.stderr
    assert "--keep-data" in both.stderr
    alive = await run_cli("instances", "get", "main", "--json", url=url, token=token)
    assert json.loads(alive.stdout)["phase"] == "running"  # nothing was sent
    nobody = await run_cli("instances", "undelete", "main", url=url, token=token)
    assert (nobody.code, nobody.stderr.strip()) == (4, "error: no instance named 'main'")
    bad = await run_cli(
        "snapshots", "schedule", "set", "main", "--every", "daily", "--keep", "7", url=url
    )
    assert bad.code == 2
    assert "'daily' is not a duration" in bad.stderr
    whose = await run_cli("snapshots", "schedule", "get", url=url, token=token)
    assert whose.code == 2
    assert "--tenant" in whose.stderr
    too_often = await run_cli(
        "snapshots",
        "schedule",
        "set",
        "main",
        "--every",
        "30s",
        "--keep",
        "1",
        url=url,
        token=token,
    )
    assert too_often.code == 2, too_often.stderr  # the service's 422: at least 60 s


async def test_instance_and_tenant_schedules(service: Service) -> None:
    token, instance_id = await running_instance(service)
    url = service.url
    unset = await run_cli("snapshots", "schedule", "get", "main", url=url, token=token)
    assert unset.code == 4, unset.stderr
    tenant = await run_cli(
        "snapshots", "schedule", "set", "--tenant", "acme", "--every", "1d", "--keep", "7",
        url=url, token=ADMIN_TOKEN,
    )  # fmt: skip
    assert tenant.code == 0, tenant.stderr
    assert tenant.stdout.startswith("set: snapshot schedule of tenant ")
    assert "every 1d, keep 7" in tenant.stdout
    inherited = await run_cli(
        "snapshots", "schedule", "get", "main", "--json", url=url, token=token
    )
    body = json.loads(inherited.stdout)
    assert (body["instance_id"], body["every"], body["keep"]) == (None, 86400, 7)

    own = await run_cli(
        "snapshots", "schedule", "set", "main", "--every", "6h", "--keep", "3", "--json",
        url=url, token=token,
    )  # fmt: skip
    assert own.code == 0, own.stderr
    body = json.loads(own.stdout)
    assert (body["instance_id"], body["every"], body["keep"]) == (instance_id, 21600, 3)
    for every, seconds in (("1h30m", 5400), ("3600", 3600)):
        changed = await run_cli(
            "snapshots", "schedule", "set", instance_id, "--every", every, "--keep", "2",
            url=url, token=token,
        )  # fmt: skip
        assert changed.code == 0, changed.stderr
        got = await run_cli("snapshots", "schedule", "get", "main", "--json", url=url, token=token)
        assert json.loads(got.stdout)["every"] == seconds
    shown = await run_cli("snapshots", "schedule", "get", "main", url=url, token=token)
    assert shown.stdout.startswith(f"snapshot schedule of instance {instance_id}: every 1h, keep 2")

    removed = await run_cli("snapshots", "schedule", "rm", "main", url=url, token=token)
    assert removed.code == 0, removed.stderr
    assert removed.stdout.strip() == "removed the own snapshot schedule of instance main"
    back = await run_cli("snapshots", "schedule", "get", "main", "--json", url=url, token=token)
    assert json.loads(back.stdout)["instance_id"] is None  # the tenant's applies again
    gone = await run_cli("snapshots", "schedule", "rm", "--tenant", "acme", url=url)
    assert gone.code == 0, gone.stderr
    none = await run_cli("snapshots", "schedule", "get", "--tenant", "acme", url=url)
    assert none.code == 4, none.stderr

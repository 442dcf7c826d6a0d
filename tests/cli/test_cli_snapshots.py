"""``chroma-orch snapshots ...`` and ``instances clone`` as a subprocess against a
live service (real PostgreSQL, real Chroma servers, the local snapshot store)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.cli.conftest import run_cli
from tests.e2e.service import Service, running_instance, running_service


async def _snapshot(url: str, token: str, *transport: str) -> str:
    """snapshots create main --wait: progress on stderr, the ready snapshot on stdout."""
    made = await run_cli("snapshots", "create", "main", "--wait", *transport, url=url, token=token)
    assert made.code == 0, made.stderr
    assert "is ready: " in made.stdout, made.stdout
    assert ", Chroma " in made.stdout
    assert ": ready\n" in made.stderr, made.stderr  # progress lines
    snapshot_id = made.stdout.split()[1]
    assert uuid.UUID(snapshot_id)
    return snapshot_id


async def test_snapshot_list_clone_restore_and_delete(service: Service) -> None:
    token, instance_id = await running_instance(service)
    url = service.url
    first = await _snapshot(url, token)
    second = await _snapshot(url, token, "--poll")  # without the event stream too
    table = await run_cli("snapshots", "ls", "main", url=url, token=token)
    assert table.code == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "KIND", "PHASE", "SIZE", "CHROMA", "AGE"]
    assert [row.split()[:3] for row in rows] == [
        [second, "manual", "ready"],
        [first, "manual", "ready"],
    ]
    listed = json.loads(
        (await run_cli("snapshots", "ls", instance_id, "--json", url=url, token=token)).stdout
    )
    assert [s["id"] for s in listed] == [second, first]
    got = await run_cli("snapshots", "get", first, "--json", url=url, token=token)
    assert json.loads(got.stdout)["size_bytes"] > 0

    cloned = await run_cli(
        "instances", "clone", first, "--name", "copy", "--wait", url=url, token=token
    )
    assert cloned.code == 0, cloned.stderr
    assert "instance copy (" in cloned.stdout
    assert "is running at http://127.0.0.1:" in cloned.stdout

    restored = await run_cli(
        "snapshots", "restore", "main", first, "--wait", "--json", url=url, token=token
    )
    assert restored.code == 0, restored.stderr
    instance = json.loads(restored.stdout)
    assert (instance["phase"], instance["generation"]) == ("running", 2)
    kinds = json.loads(
        (await run_cli("snapshots", "ls", "main", "--json", url=url, token=token)).stdout
    )
    assert [s["kind"] for s in kinds] == ["pre_restore", "manual", "manual"]

    removed = await run_cli("snapshots", "rm", second, url=url, token=token)
    assert removed.code == 0, removed.stderr
    assert removed.stdout.startswith(f"delete accepted: snapshot {second} (manual)")
    assert " is deleting" in removed.stdout


async def test_failures_have_their_exit_codes(service: Service) -> None:
    token, _ = await running_instance(service)
    url = service.url
    missing = await run_cli("snapshots", "get", str(uuid.uuid4()), url=url, token=token)
    assert missing.code == 4, missing.stderr
    invalid = await run_cli("snapshots", "rm", "not-a-uuid", url=url, token=token)
    assert invalid.code == 2, invalid.stderr
    no_instance = await run_cli("snapshots", "create", "nope", url=url, token=token)
    assert (no_instance.code, no_instance.stderr.strip()) == (4, "error: no instance named 'nope'")
    pending = await run_cli("snapshots", "create", "main", "--json", url=url, token=token)
    assert json.loads(pending.stdout)["phase"] == "pending"
    clone_of_missing = await run_cli(
        "instances", "clone", str(uuid.uuid4()), "--name", "x", url=url, token=token
    )
    assert clone_of_missing.code == 4, clone_of_missing.stderr


async def test_a_failed_snapshot_exits_1_with_its_reason(database_url: str, tmp_path: Path) -> None:
    """The store's directory cannot be made (a file is in the way): the snapshot fails."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = {
        "CHROMA_ORCH_SNAPSHOTS__DIR": str(blocker / "snapshots"),
        "CHROMA_ORCH_SNAPSHOTS__ATTEMPTS": "1",
    }
    async with running_service(database_url, tmp_path / "data", **env) as service:
        token, _ = await running_instance(service)
        made = await run_cli(
            "snapshots", "create", "main", "--wait", "--json", url=service.url, token=token
        )
    assert made.code == 1, (made.stdout, made.stderr)
    failed = json.loads(made.stdout)
    assert failed["phase"] == "failed"
    assert failed["failure"]["reason"]
    assert f"error: snapshot {failed['id']} failed: {failed['failure']['reason']}: " in made.stderr

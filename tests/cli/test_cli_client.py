"""The client commands of ``chroma-orch`` as a subprocess against a live service
(real PostgreSQL, real Chroma servers): output, and exit codes scripts rely on."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

import pytest

from tests.cli.conftest import Result, run_cli
from tests.conftest import ADMIN_TOKEN
from tests.e2e.service import Service, free_port
from tests.helpers import create_tenant


async def _tenant_token(url: str) -> str:
    """tenants create + tokens create through the CLI; returns the tenant's token."""
    created = await run_cli("tenants", "create", "acme", "--json", url=url)
    assert created.code == 0, created.stderr
    tenant_id = json.loads(created.stdout)["id"]
    listed = await run_cli("tenants", "ls", url=url)
    assert listed.code == 0
    assert "acme" in listed.stdout
    assert tenant_id in listed.stdout
    issued = await run_cli("tokens", "create", "acme", "--name", "ci", url=url)
    assert issued.code == 0, issued.stderr
    assert "shown only once" in issued.stderr
    token = issued.stdout.strip()
    assert token
    assert "\n" not in token
    return token


async def _launch_and_list(url: str, token: str) -> str:
    launched = await run_cli("instances", "launch", "main", "--wait", url=url, token=token)
    assert launched.code == 0, launched.stderr
    assert "is running at http://127.0.0.1:" in launched.stdout
    assert "main: running" in launched.stderr, launched.stderr  # progress
    # the start phases a local server goes through, in order, with the time taken
    lines = launched.stderr
    assert "main: start phase heartbeat_answered at +" in lines, lines
    spawned, listening, answered = (
        lines.index(f"main: start phase {phase} at +")
        for phase in ("running", "listening", "heartbeat_answered")
    )
    assert spawned < listening < answered < lines.index("main: running\n")
    table = await run_cli("instances", "ls", url=url, token=token)
    assert table.code == 0
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "PHASE", "CHROMA", "SIZE", "ENDPOINT", "AGE"]
    name, instance_id, phase, version, size, endpoint, _ = row.split()
    assert (name, phase) == ("main", "running")
    assert endpoint.startswith("http://127.0.0.1:")
    as_json = await run_cli("instances", "ls", "--json", url=url, token=token)
    listed = json.loads(as_json.stdout)
    assert [i["id"] for i in listed] == [instance_id]
    spec = listed[0]["spec"]
    assert version == spec["chroma_version"] != "-"  # the installed version, resolved
    assert size == (f"{spec['memory_mib']}MiB" if spec["memory_mib"] else "-")
    shown = await run_cli("instances", "get", "main", url=url, token=token)
    assert shown.stdout.rstrip().endswith(f"; Chroma {version}, size {size}"), shown.stdout
    return instance_id


async def _follow_logs_across_a_restart(
    url: str, token: str, instance_id: str, generation: int, *transport: str
) -> None:
    """logs -f prints the history, then the next start's output as it comes."""
    env = {**os.environ, "CHROMA_ORCH_URL": url, "CHROMA_ORCH_TOKEN": token}
    follower = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "chroma_orch.cli", "instances", "logs", instance_id, "-f"),
        *transport,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert follower.stdout is not None
    try:
        first = await asyncio.wait_for(follower.stdout.readline(), 30)
        assert b"starting generation=1" in first
        restarted = await run_cli(
            "instances", "restart", "main", "--wait", *transport, url=url, token=token
        )
        assert restarted.code == 0, restarted.stderr
        marker = f"starting generation={generation + 1}".encode()
        while marker not in (line := await asyncio.wait_for(follower.stdout.readline(), 30)):
            assert line, "the follower stopped before the restart's output"
    finally:
        follower.terminate()
        await follower.wait()


async def _exit_codes(url: str, token: str) -> None:
    stopped = await run_cli("instances", "stop", "main", "--wait", "--poll", url=url, token=token)
    assert stopped.code == 0, stopped.stderr
    assert "is stopped" in stopped.stdout
    invalid = await run_cli("instances", "restart", "main", url=url, token=token)
    assert invalid.code == 5
    assert "cannot restart an instance whose desired state is stopped" in invalid.stderr
    taken = await run_cli("instances", "launch", "main", url=url, token=token)
    assert taken.code == 5
    assert "already has an instance named" in taken.stderr
    bad_token = await run_cli("instances", "ls", url=url, token="co_not-a-real-token")
    assert bad_token.code == 3, bad_token.stderr
    no_token = await run_cli("instances", "ls", url=url, token=None)
    assert no_token.code == 3
    assert "CHROMA_ORCH_TOKEN" in no_token.stderr
    unknown = await run_cli("instances", "stop", str(uuid.uuid4()), url=url, token=token)
    assert unknown.code == 4
    assert "error:" in unknown.stderr
    no_name = await run_cli("instances", "logs", "nope", url=url, token=token)
    assert no_name.code == 4
    bad_name = await run_cli("instances", "launch", "Not_A_Label", url=url, token=token)
    assert bad_name.code == 2
    assert "name" in bad_name.stderr


async def test_a_whole_lifecycle_from_the_command_line(service: Service) -> None:
    url = service.url
    token = await _tenant_token(url)
    instance_id = await _launch_and_list(url, token)
    logs = await run_cli("instances", "logs", "main", "--tail", "50", url=url, token=token)
    assert logs.code == 0
    assert "--- chroma-orch" in logs.stdout
    await _follow_logs_across_a_restart(url, token, instance_id, 1)
    await _follow_logs_across_a_restart(url, token, instance_id, 2, "--poll")
    await _exit_codes(url, token)
    started = await run_cli("instances", "start", instance_id, "--wait", url=url, token=token)
    assert started.code == 0
    assert "is running" in started.stdout
    deleted = await run_cli("instances", "delete", "main", "--wait", url=url, token=token)
    assert deleted.code == 0, deleted.stderr
    assert "is deleted" in deleted.stdout
    log = service.log_path.read_text()
    assert f'"WebSocket /v1/events?snapshot=none&instance_id={instance_id}" [accepted]' in log
    assert f'"WebSocket /v1/instances/{instance_id}/logs/stream' in log
    assert f"GET /v1/instances/{instance_id}/wait?phase=stopped" in log  # --poll
    gone = await run_cli("instances", "get", instance_id, url=url, token=token)
    assert gone.code == 4
    empty = await run_cli("instances", "ls", url=url, token=token)
    assert empty.code == 0
    assert empty.stdout == ""
    assert "no instances" in empty.stderr


@pytest.mark.parametrize("transport", [(), ("--poll",)], ids=["events", "long-poll"])
async def test_wait_reports_a_failed_launch(
    failing_service: Service, transport: tuple[str, ...]
) -> None:
    async with failing_service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    url = failing_service.url
    launch = ("instances", "launch", "doomed", "--wait", *transport)
    result = await run_cli(*launch, url=url, token=token)
    assert result.code == 1, result
    assert "doomed: failed" in result.stderr
    async with failing_service.client(token) as http:
        page = (await http.get("/v1/instances")).json()
    failure = page["items"][0]["failure"]
    assert f"failed: {failure['reason']}: {failure['message']}" in result.stderr
    scripted = await run_cli(
        "instances", "launch", "again", "--wait", "--json", *transport, url=url, token=token
    )
    assert scripted.code == 1
    assert json.loads(scripted.stdout)["phase"] == "failed"


async def test_an_unreachable_service_exits_6() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result: Result = await run_cli("tenants", "ls", url=url, token=ADMIN_TOKEN)
    assert result.code == 6
    assert f"cannot reach {url}" in result.stderr


async def test_the_token_comes_from_a_file_or_the_environment(
    service: Service, tmp_path: Path
) -> None:
    """--token shows in `ps`: it still works, with a warning; --token-file and
    CHROMA_ORCH_TOKEN are the quiet ways."""
    url = service.url
    token_file = tmp_path / "token"
    token_file.write_text(f"{ADMIN_TOKEN}\n")
    token_file.chmod(0o600)
    from_file = await run_cli("tenants", "ls", "--token-file", str(token_file), url=url, token=None)
    assert from_file.code == 0, from_file.stderr
    assert "warning" not in from_file.stderr
    from_env = await run_cli("tenants", "ls", url=url)
    assert from_env.code == 0, from_env.stderr
    assert "warning" not in from_env.stderr
    flag = await run_cli("tenants", "ls", "--token", ADMIN_TOKEN, url=url, token=None)
    assert flag.code == 0
    assert "--token is visible to other users" in flag.stderr
    assert ADMIN_TOKEN not in flag.stderr

    token_file.chmod(0o644)
    shared = await run_cli("--token-file", str(token_file), "tenants", "ls", url=url, token=None)
    assert shared.code == 0
    assert f"{token_file} can be read by other users" in shared.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("co_not-a-real-token")
    assert (await run_cli("tenants", "ls", "--token-file", str(wrong), url=url)).code == 3
    missing = await run_cli("tenants", "ls", "--token-file", str(tmp_path / "nope"), url=url)
    assert missing.code == 2
    assert f"cannot read the token file {tmp_path / 'nope'}" in missing.stderr
    both = ("tenants", "ls", "--token", ADMIN_TOKEN, "--token-file", str(token_file))
    assert (await run_cli(*both, url=url, token=None)).code == 2

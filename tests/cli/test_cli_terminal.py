"""What the CLI shows a person at a terminal (rich tables, colour, --wait's live
progress) against what a script gets through a pipe: the same text, never an
escape sequence, and --json exactly as the API answers it."""

from __future__ import annotations

import json
import re

from tests.cli.conftest import run_cli, run_on_terminal
from tests.e2e.service import Service
from tests.helpers import create_tenant

ESC = "\x1b"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _canonical(body: object) -> str:
    """--json's promise: the API's answer, indented by 2, keys sorted, one newline."""
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


async def test_piped_output_has_no_escape_sequences(service: Service) -> None:
    url = service.url
    for args in (
        ("tenants", "create", "acme"),
        ("tenants", "ls"),
        ("tokens", "create", "acme"),
        ("instances", "ls"),
        ("instances", "get", "nope"),
        ("instances", "launch"),  # a usage error
        ("instances", "ls", "--help"),
        ("serve", "--help"),
    ):
        result = await run_cli(*args, url=url)
        assert ESC not in result.stdout, args
        assert ESC not in result.stderr, args
    listed = await run_cli("tenants", "ls", url=url)
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "AGE"]
    assert row.split()[0] == "acme"


async def test_a_terminal_gets_a_coloured_table_with_the_same_text(service: Service) -> None:
    url = service.url
    assert (await run_cli("tenants", "create", "acme", url=url)).code == 0
    piped = await run_cli("tenants", "ls", url=url)
    shown = await run_on_terminal("tenants", "ls", url=url)
    assert shown.code == 0
    assert ESC in shown.stdout  # the bold header
    plain = ANSI.sub("", shown.stdout).splitlines()
    assert len(plain) == len(piped.stdout.splitlines()) == 2

    def aligned(lines: list[str]) -> list[str]:
        return [line.rsplit(None, 1)[0] for line in lines]  # the AGE column may tick over

    assert aligned(plain) == aligned(piped.stdout.splitlines())


async def test_json_is_the_api_answer_byte_for_byte(service: Service) -> None:
    url = service.url
    created = await run_cli("tenants", "create", "acme", "--json", url=url)
    async with service.client() as admin:
        tenant = (await admin.get(f"/v1/tenants/{json.loads(created.stdout)['id']}")).json()
        tenants = (await admin.get("/v1/tenants")).json()
    assert created.stdout == _canonical(tenant)
    for run in (run_cli, run_on_terminal):  # a terminal changes nothing about --json
        listed = await run("tenants", "ls", "--json", url=url)
        assert listed.stdout.replace("\r\n", "\n") == _canonical(tenants)
    missing = await run_cli("instances", "get", "nope", "--json", url=url)
    assert (missing.code, missing.stdout) == (4, "")


async def test_wait_shows_live_progress_and_exits_1_when_the_launch_fails(
    failing_service: Service,
) -> None:
    async with failing_service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    launch = ("instances", "launch", "doomed", "--wait")
    shown = await run_on_terminal(*launch, url=failing_service.url, token=token, stream="stderr")
    assert shown.code == 1, shown
    assert re.search(r"doomed: \S+.*\d:\d\d:\d\d", shown.stderr), shown.stderr  # elapsed time
    assert "doomed: failed" in ANSI.sub("", shown.stderr)
    assert "error: instance doomed" in ANSI.sub("", shown.stderr)
    assert shown.stdout == ""
    again = ("instances", "launch", "again", "--wait", "--poll")
    piped = await run_cli(*again, url=failing_service.url, token=token)
    assert piped.code == 1
    assert ESC not in piped.stderr
    assert not re.search(r"\d:\d\d:\d\d", piped.stderr)  # no live line in a log file

"""``chroma-orch plans ...`` and the spec and label flags of ``instances launch|update``,
as a subprocess against a live service (real PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

from chroma_orch.cli_client.spec_options import spec_flags
from tests.cli.conftest import run_cli
from tests.e2e.service import Service
from tests.helpers import create_tenant


async def test_plans_from_the_command_line(service: Service, tmp_path: Path) -> None:
    url = service.url
    definition = tmp_path / "small.json"
    definition.write_text(json.dumps({"quota": {"memory_mib": 4096}}))
    put = await run_cli("plans", "put", "small", str(definition), url=url)
    assert put.code == 0, put.stderr
    assert put.stdout.startswith("plan small (0 tenants)")
    inline = await run_cli("plans", "put", "big", '{"quota": {"cpu": 8192}}', "--json", url=url)
    assert json.loads(inline.stdout)["definition"]["quota"]["cpu"] == 8192
    async with service.client() as admin:
        await create_tenant(admin, "acme")
    assigned = await run_cli("plans", "assign", "acme", "small", url=url)
    assert (assigned.code, assigned.stdout.strip()) == (0, "tenant acme: plan small")
    table = await run_cli("plans", "ls", url=url)
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows == [["NAME", "TENANTS", "QUOTA"], ["big", "0", "cpu=8192"],
                    ["small", "1", "memory_mib=4096"]]  # fmt: skip
    in_use = await run_cli("plans", "delete", "small", url=url)
    assert in_use.code == 5
    assert "plan 'small' is the plan of 1 tenant" in in_use.stderr
    back = await run_cli("plans", "assign", "acme", "--default", url=url)
    assert back.stdout.strip() == "tenant acme: plan (default)"
    assert (await run_cli("plans", "delete", "small", url=url)).code == 0
    bad = await run_cli("plans", "put", "x", '{"allowed": {"cpu": [2, 1]}}', url=url)
    assert bad.code == 2
    assert "minimum is above the maximum" in bad.stderr


async def test_labels_and_specs_from_the_command_line(service: Service) -> None:
    url = service.url
    async with service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    launched = await run_cli(
        "instances", "launch", "main", "--label", "tier=gold", "--json", url=url, token=token
    )
    assert launched.code == 0, launched.stderr
    assert json.loads(launched.stdout)["labels"] == {"tier": "gold"}
    updated = await run_cli(
        "instances", "update", "main", "--label", "tier=silver", "--label", "team=a", "--json",
        url=url, token=token,
    )  # fmt: skip
    assert updated.code == 0, updated.stderr
    assert json.loads(updated.stdout)["labels"] == {"tier": "silver", "team": "a"}
    refused = await run_cli(
        "instances", "create", "other", "--chroma-version", "0.0.0-none", "--memory", "512",
        url=url, token=token,
    )  # fmt: skip
    assert refused.code == 2
    assert "(invalid_spec, HTTP 422)" in refused.stderr
    nothing = await run_cli("instances", "update", "main", url=url, token=token)
    assert nothing.code == 2
    assert "nothing to change" in nothing.stderr
    not_a_pair = await run_cli(
        "instances", "update", "main", "--setting", "x", url=url, token=token
    )
    assert not_a_pair.code == 2
    assert "is not KEY=VALUE" in not_a_pair.stderr


def test_spec_flags_become_the_spec_request() -> None:
    flags = spec_flags(1024, 2048, "1.5.9", ["allow_reset=true", 'cors_allow_origins=["a"]'])
    assert flags.request() == {
        "cpu": 1024,
        "memory_mib": 2048,
        "chroma_version": "1.5.9",
        "settings": {"allow_reset": True, "cors_allow_origins": ["a"]},
    }
    assert spec_flags(None, None, None, ["name=plain text"]).request() == {
        "settings": {"name": "plain text"}
    }
    assert spec_flags(None, None, None, None).request() is None

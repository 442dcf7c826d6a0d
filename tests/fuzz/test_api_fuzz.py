"""Hostile input: schemathesis against the live /openapi.json of the real service.

All operations (the seed routes included), every check, stateful links where the
spec allows, a fixed seed: zero 5xx, every response matches the schema, invalid
input refused, valid input accepted. The reconciler is off in this replica: the
API surface is under test, not Chroma start-ups.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN
from tests.e2e.service import Service, running_service

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20261126


@pytest.fixture
async def api_only_service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    async with running_service(
        database_url,
        tmp_path / "data",
        CHROMA_ORCH_RECONCILER__ENABLED="false",
        CHROMA_ORCH_LIMITS__MAX_CONCURRENT_STARTS="1000000",
        # the invalid-authentication checks send many bad tokens on purpose: what they
        # test is the answer to each, not the refusal budget (tests/security has that)
        CHROMA_ORCH_LIMITS__AUTH_FAILURES="1000000",
    ) as service:
        yield service


@pytest.mark.timeout(600)
async def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    api_only_service: Service, tmp_path: Path
) -> None:
    st = Path(sys.executable).with_name("st")
    report = tmp_path / "schemathesis.txt"
    process = await asyncio.create_subprocess_exec(
        str(st),
        "--config-file",
        str(CONFIG),
        "run",
        f"{api_only_service.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "--max-examples",
        "60",
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--workers",
        "2",
        "--warnings",
        "off",
        "--request-timeout",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    report.write_bytes(output)
    text = output.decode(errors="replace")
    assert "Tested:" in text, text[-3000:]
    assert process.returncode == 0 or _only_known_tool_error(text), text[-6000:]


def _only_known_tool_error(text: str) -> bool:
    """schemathesis (via hypothesis) sometimes crashes describing a strategy
    ("AST constructor recursion depth mismatch"): a tool error, not a finding.
    Accepted only when it is the sole problem reported."""
    problems = re.findall(r"^\s+(?:❌|🚫) (.+?): \d+$", text, re.MULTILINE)
    return (
        "Failures:" not in text
        and problems == ["Runtime Error"]
        and "AST constructor recursion depth mismatch" in text
    )

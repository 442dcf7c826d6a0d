"""How guarded upgrades of one instance look to people: a table of an instance's
upgrades, and a description of one (``--json`` prints the API's answer instead)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chroma_orch.cli_client import render

HEADERS = ["ID", "FROM", "TO", "PHASE", "REASON", "AGE"]
ENDED = ("succeeded", "rolled_back", "cancelled")
"""The phases an upgrade ends in."""


def versions(upgrade: dict[str, Any]) -> str:
    """``1.5.9 -> 1.5.8``."""
    return f"{upgrade.get('from_version') or '?'} -> {upgrade.get('to_version') or '?'}"


def print_upgrades(upgrades: Sequence[dict[str, Any]]) -> None:
    rows = [
        [
            u["id"],
            u.get("from_version") or "-",
            u.get("to_version") or "-",
            u["phase"],
            (u.get("failure") or {}).get("reason") or "-",
            render.age(u.get("created_at")),
        ]
        for u in upgrades
    ]
    render.print_table(HEADERS, rows)


def failure_text(upgrade: dict[str, Any]) -> str:
    """``ParityMismatch: the new server answered differently``, or ``no reason given``."""
    fail = upgrade.get("failure") or {}
    if not fail:
        return "no reason given"
    return f"{fail.get('reason')}: {fail.get('message') or 'no message'}"


def describe(upgrade: dict[str, Any]) -> list[str]:
    """One line (where the upgrade stands), then one per difference the parity probe found."""
    line = (
        f"upgrade {upgrade['id']} of instance {upgrade['instance_id']} "
        f"({versions(upgrade)}) is {upgrade['phase']}"
    )
    if upgrade["phase"] in ("rolled_back", "cancelled", "rolling_back"):
        line += f": {failure_text(upgrade)}"
    return [line, *(f"  differs: {d}" for d in upgrade.get("differences") or [])]


def progress_line(upgrade: dict[str, Any]) -> str:
    """What ``--wait`` reports: ``upgrade to 1.5.8: probing``."""
    return f"upgrade to {upgrade.get('to_version') or '?'}: {upgrade['phase']}"

"""Output for people (tables, short lines) and for scripts (``--json``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def emit_json(value: Any) -> None:
    out(json.dumps(value, indent=2, sort_keys=True))


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """A compact age like kubectl's: 45s, 12m, 3h, 2d."""
    if not timestamp:
        return "-"
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(int(((now or datetime.now(UTC)) - then).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, headers first."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def endpoint(instance: dict[str, Any]) -> str:
    ep = instance.get("endpoint") or {}
    return str(ep.get("url") or "-")


def failure(instance: dict[str, Any]) -> str:
    fail = instance.get("failure") or {}
    if not fail:
        return "no reason given"
    return f"{fail.get('reason')}: {fail.get('message')}"


def describe(instance: dict[str, Any]) -> str:
    """One line: name, id, phase (and where it listens, or why it failed)."""
    line = f"instance {instance['name']} ({instance['id']}) is {instance['phase']}"
    if instance["phase"] == "failed":
        return f"{line}: {failure(instance)}"
    if instance["phase"] != "running":
        return line
    if instance.get("endpoint"):
        line += f" at {endpoint(instance)}"
    if instance.get("url"):
        line += f" (clients: {instance['url']})"
    return line


def accepted(instance: dict[str, Any], action: str) -> str:
    """A request the reconciler will carry out: what was asked, where it stands."""
    return (
        f"{action} accepted: instance {instance['name']} ({instance['id']}) is "
        f"{instance['phase']}, desired {instance['desired_state']} "
        "(--wait follows it)"
    )


def instance_rows(instances: Sequence[dict[str, Any]]) -> str:
    rows = [
        [i["name"], i["id"], _phase(i), endpoint(i), age(i.get("created_at"))] for i in instances
    ]
    return table(["NAME", "ID", "PHASE", "ENDPOINT", "AGE"], rows)


def _phase(instance: dict[str, Any]) -> str:
    phase = str(instance["phase"])
    if instance.get("observed_generation") != instance.get("generation"):
        target = instance.get("desired_state")
        return f"{phase}->{target}" if target and target != phase else phase
    return phase

"""Output for people (tables, short lines) and for scripts (``--json``).

Plain lines and JSON are written as they are; tables and error prefixes go
through rich, which colours them only when the stream is a terminal."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

STDOUT = Console(soft_wrap=True, highlight=False)
STDERR = Console(stderr=True, soft_wrap=True, highlight=False)
"""Follow sys.stdout / sys.stderr as they are at each write (tests capture them)."""


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def error(message: str) -> None:
    """``error: message`` on stderr, the prefix in red on a terminal."""
    STDERR.print(Text.assemble(("error:", "bold red"), " ", message))


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


def _grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    """Left-aligned columns two spaces apart, no borders: the same text piped or not."""
    grid = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for header in headers:
        grid.add_column(header, no_wrap=True)
    for row in rows:
        grid.add_row(*row)
    return grid


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The table as plain text (no colour, never wrapped), headers first."""
    console = Console(file=io.StringIO(), width=100_000, color_system=None)
    with console.capture() as captured:
        console.print(_grid(headers, rows))
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on stdout: coloured headers on a terminal, plain text otherwise."""
    if STDOUT.is_terminal:
        STDOUT.print(_grid(headers, rows))
    else:
        out(table(headers, rows))


def endpoint(instance: dict[str, Any]) -> str:
    ep = instance.get("endpoint") or {}
    return str(ep.get("url") or "-")


def failure(instance: dict[str, Any]) -> str:
    fail = instance.get("failure") or {}
    if not fail:
        return "no reason given"
    return f"{fail.get('reason')}: {fail.get('message')}"


def chroma_version(instance: dict[str, Any]) -> str:
    """The Chroma version of the instance's spec; ``-`` for the runtime's default."""
    return str((instance.get("spec") or {}).get("chroma_version") or "-")


def size(instance: dict[str, Any]) -> str:
    """The spec's size, compact: ``0.25vCPU/512MiB``, ``2048MiB``; ``-`` for the
    runtime's default."""
    spec = instance.get("spec") or {}
    parts = []
    if spec.get("cpu"):
        parts.append(f"{spec['cpu'] / 1024:g}vCPU")
    if spec.get("memory_mib"):
        parts.append(f"{spec['memory_mib']}MiB")
    return "/".join(parts) or "-"


def describe(instance: dict[str, Any]) -> str:
    """One line: name, id, phase (and where it listens, or why it failed), and the
    Chroma version and size it runs on."""
    line = f"instance {instance['name']} ({instance['id']}) is {instance['phase']}"
    if instance["phase"] == "failed":
        line += f": {failure(instance)}"
    elif instance["phase"] == "running":
        if instance.get("endpoint"):
            line += f" at {endpoint(instance)}"
        if instance.get("url"):
            line += f" (clients: {instance['url']})"
    if instance.get("spec") is None:
        return line
    return f"{line}; Chroma {chroma_version(instance)}, size {size(instance)}"


def accepted(instance: dict[str, Any], action: str) -> str:
    """A request the reconciler will carry out: what was asked, where it stands."""
    return (
        f"{action} accepted: instance {instance['name']} ({instance['id']}) is "
        f"{instance['phase']}, desired {instance['desired_state']} "
        "(--wait follows it)"
    )


def print_instances(instances: Sequence[dict[str, Any]]) -> None:
    rows = [
        [
            i["name"],
            i["id"],
            _phase(i),
            chroma_version(i),
            size(i),
            endpoint(i),
            age(i.get("created_at")),
        ]
        for i in instances
    ]
    print_table(["NAME", "ID", "PHASE", "CHROMA", "SIZE", "ENDPOINT", "AGE"], rows)


def _phase(instance: dict[str, Any]) -> str:
    phase = str(instance["phase"])
    if instance.get("observed_generation") != instance.get("generation"):
        target = instance.get("desired_state")
        return f"{phase}->{target}" if target and target != phase else phase
    return phase

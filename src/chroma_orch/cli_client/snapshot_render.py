"""How snapshots look to people: a table of an instance's snapshots, one line
for one snapshot (``--json`` prints the API's answer instead)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chroma_orch.cli_client import render

HEADERS = ["ID", "KIND", "PHASE", "SIZE", "CHROMA", "AGE"]


def size(value: int | None) -> str:
    """Bytes in binary units, one decimal: 512 B, 1.5 KiB, 12.3 MiB."""
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{value} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("not reached")


def phase(snapshot: dict[str, Any]) -> str:
    fail = snapshot.get("failure") or {}
    if snapshot["phase"] == "failed" and fail.get("reason"):
        return f"failed ({fail['reason']})"
    return str(snapshot["phase"])


def print_snapshots(snapshots: Sequence[dict[str, Any]]) -> None:
    rows = [
        [
            s["id"],
            s["kind"],
            phase(s),
            size(s.get("size_bytes")),
            s.get("chroma_version") or "-",
            render.age(s.get("created_at")),
        ]
        for s in snapshots
    ]
    render.print_table(HEADERS, rows)


def describe(snapshot: dict[str, Any]) -> str:
    """One line: which snapshot of which instance, where it stands."""
    line = (
        f"snapshot {snapshot['id']} ({snapshot['kind']}) of instance "
        f"{snapshot['instance_id']} is {phase(snapshot)}"
    )
    if snapshot["phase"] == "failed":
        fail = snapshot.get("failure") or {}
        return f"{line}: {fail.get('message') or 'no message'}"
    if snapshot["phase"] == "ready":
        version = snapshot.get("chroma_version") or "unknown"
        line += f": {size(snapshot.get('size_bytes'))}, Chroma {version}"
    return line

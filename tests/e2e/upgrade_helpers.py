"""Helpers of the guarded-upgrade tests: a service that knows a second Chroma version
(and broken ones), real data written and read with chromadb, the served version."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import chromadb
import httpx
import psutil
from chromadb.config import Settings as ChromaSettings

from tests.chroma_versions import SECOND_VERSION, second_chroma_python
from tests.e2e.service import chroma_processes
from tests.helpers import bearer, wait_for

BLIND = "0.0.1-blind"
"""A version whose server starts but serves an empty directory: one that cannot read
the data it is given (as Chroma 1.0 cannot read 0.6's)."""
DEAD = "0.0.2-dead"
"""A version whose server exits at once."""
MARKING = "0.0.3-marking"
"""A version that writes to the data it is given (``MARK``, as a version that migrates
the files on start), then serves an empty directory like ``BLIND``: rolled back."""
MARK = "written-by-the-new-version"


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def versions_env(tools: Path) -> dict[str, str]:
    """``CHROMA_ORCH_LOCAL__CHROMA_VERSIONS`` naming the second real version and the
    broken ones (interpreters wrapped to run the launcher on an empty directory, after
    a write to the data or not, or to exit)."""
    tools.mkdir(parents=True, exist_ok=True)
    tools.chmod(0o755)
    real = str(second_chroma_python())
    empty = tools / "empty-data"
    empty.mkdir(exist_ok=True)
    empty.chmod(0o777)  # a root service's servers run as an unprivileged account
    # the launcher's arguments: -I LAUNCHER LOCK PATH ...: PATH replaced
    on_empty = f'a1=$1 a2=$2 a3=$3; shift 4; exec "{real}" "$a1" "$a2" "$a3" "{empty}" "$@"'
    blind = _script(tools / "blind-python", on_empty)
    marking = _script(tools / "marking-python", f': > "$4/{MARK}"; {on_empty}')
    dead = _script(tools / "dead-python", "echo 'this version cannot start' >&2; exit 3")
    versions = {
        SECOND_VERSION: {"python": real},
        BLIND: {"python": blind},
        DEAD: {"python": dead},
        MARKING: {"python": marking},
    }
    return {"CHROMA_ORCH_LOCAL__CHROMA_VERSIONS": json.dumps(versions)}


def _collection(base: str, token: str, name: str = "docs") -> Any:
    client = chromadb.HttpClient(
        host=base, headers=bearer(token), settings=ChromaSettings(anonymized_telemetry=False)
    )
    return client.get_or_create_collection(name)


def write_data(base: str, token: str, count: int = 50) -> None:
    docs = _collection(base, token)
    docs.add(
        ids=[f"d{i}" for i in range(count)],
        embeddings=[[float(i), float(i % 7), 1.0] for i in range(count)],
        metadatas=[{"i": i} for i in range(count)],
    )


def read_data(base: str, token: str) -> tuple[int, list[str]]:
    """How many records, and the nearest neighbours of one query."""
    docs = _collection(base, token)
    nearest = docs.query(query_embeddings=[[3.0, 3.0, 1.0]], n_results=3)["ids"][0]
    return docs.count(), list(nearest)


def served_version(data_dir: Path, instance_id: str) -> str:
    """Which chromadb's bindings the instance's one server process has loaded."""
    processes: Sequence[psutil.Process] = chroma_processes(data_dir).get(instance_id, [])
    assert len(processes) == 1, processes
    maps = Path(f"/proc/{processes[0].pid}/maps").read_text().splitlines()
    libraries = {line.split()[-1] for line in maps if "chromadb_rust_bindings" in line}
    assert len(libraries) == 1, libraries
    return SECOND_VERSION if f"chroma-{SECOND_VERSION}" in libraries.pop() else "installed"


async def upgrade(http: httpx.AsyncClient, instance_id: str, version: str) -> dict[str, Any]:
    answer = await http.post(
        f"/v1/instances/{instance_id}/upgrade", json={"chroma_version": version}
    )
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    assert body["phase"] == "pending"
    return body


async def finished(
    http: httpx.AsyncClient, instance_id: str, upgrade_id: str, timeout: float = 120
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        got = await http.get(f"/v1/instances/{instance_id}/upgrades/{upgrade_id}")
        body: dict[str, Any] = got.json()
        return body if body["phase"] in ("succeeded", "rolled_back", "cancelled") else None

    done: dict[str, Any] = await wait_for(probe, timeout=timeout)
    return done


def phases_of(events: Sequence[Mapping[str, Any]], upgrade_id: str) -> list[str]:
    return [
        e["after"]["phase"]
        for e in events
        if e["type"] == "upgrade.phase_changed" and e["after"]["id"] == upgrade_id
    ]


def uid() -> int:
    return os.getuid()

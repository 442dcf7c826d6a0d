"""Moving data in and out: a real Chroma persist directory (written by
``chromadb.PersistentClient``) imported through the CLI, queried through the data
plane with a real ``chromadb`` client; an export imported back; refusals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.service import Service
from tests.e2e.test_snapshots_e2e import VECTORS, _contents
from tests.helpers import create_tenant

_WRITE = """
import sys, chromadb
from chromadb.config import Settings
client = chromadb.PersistentClient(sys.argv[1], settings=Settings(anonymized_telemetry=False))
client.get_or_create_collection("docs").add(ids=%r, embeddings=%r)
"""


def _persist_dir(path: Path) -> Path:
    """A persist directory a self-hosted Chroma wrote and closed (its own process, as a
    user stops their server before moving it)."""
    script = _WRITE % (list(VECTORS), [list(v) for v in VECTORS.values()])
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=120)
    return path


def _cli(service: Service, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHROMA_ORCH_URL": service.url, "CHROMA_ORCH_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "chroma_orch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_import_a_persist_directory_export_and_import_again(
    service: Service, tmp_path: Path
) -> None:
    source = await asyncio.to_thread(_persist_dir, tmp_path / "selfhosted")
    async with service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    done = await asyncio.to_thread(
        _cli,
        service,
        token,
        "--json",
        "instances",
        "import",
        str(source),
        "--name",
        "moved",
        "--wait",
    )
    assert done.returncode == 0, done.stderr
    instance: dict[str, Any] = json.loads(done.stdout)
    assert instance["phase"] == "running"
    base = f"{service.url}/i/{instance['id']}"
    assert await asyncio.to_thread(_contents, base, token) == ({"a", "b", "c"}, "b")

    async with service.client(token) as http:
        listed = (await http.get(f"/v1/instances/{instance['id']}/snapshots")).json()["items"]
    (imported,) = [s for s in listed if s["kind"] == "import"]
    archive = tmp_path / "out.tar.zst"
    exported = await asyncio.to_thread(
        _cli, service, token, "snapshots", "export", imported["id"], "-o", str(archive)
    )
    assert exported.returncode == 0, exported.stderr
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == imported["checksum"]

    again = await asyncio.to_thread(
        _cli,
        service,
        token,
        "--json",
        "instances",
        "import",
        str(archive),
        "--name",
        "again",
        "--wait",
    )
    assert again.returncode == 0, again.stderr
    copy = json.loads(again.stdout)
    assert copy["phase"] == "running"
    assert await asyncio.to_thread(_contents, f"{service.url}/i/{copy['id']}", token) == (
        {"a", "b", "c"},
        "b",
    )


async def test_refusals_leave_no_instance(service: Service, tmp_path: Path) -> None:
    async with service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    old = await asyncio.to_thread(_persist_dir, tmp_path / "old")
    with sqlite3.connect(old / "chroma.sqlite3") as db:  # as Chroma 0.x leaves it
        db.execute("DELETE FROM migrations WHERE dir = 'sysdb' AND version >= 9")
    refused = await asyncio.to_thread(
        _cli, service, token, "instances", "import", str(old), "--name", "old"
    )
    assert refused.returncode == 2, refused.stderr
    assert "major 0" in refused.stderr
    junk = tmp_path / "junk.tar.zst"
    junk.write_bytes(b"not an archive" * 100)
    bad = await asyncio.to_thread(
        _cli, service, token, "instances", "import", str(junk), "--name", "junk"
    )
    assert bad.returncode == 2, bad.stderr
    assert "invalid_archive" in bad.stderr
    async with service.client(token) as http:
        assert (await http.get("/v1/instances")).json()["items"] == []

"""Export and import through the /v1 API against real PostgreSQL and the real
directory store, reconciler off: what an import writes, that every refusal leaves
nothing behind (no row, no object), and what an export streams."""

from __future__ import annotations

import hashlib
import tarfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from chroma_orch.db.models import Instance, Snapshot
from chroma_orch.domain.snapshot_archives import server_version
from tests.helpers import bearer, create_tenant
from tests.snapshots.helpers import build_archive, file_member, manifest, special_member

ZSTD = {"Content-Type": "application/zstd"}


def _archive(version: str | None = None) -> bytes:
    members = [file_member("chroma.sqlite3", b"data" * 1000), file_member("seg/a.bin", b"x")]
    raw = None
    if version is not None:
        raw = (
            manifest(2, 4001)
            .to_json()
            .replace(b'"chroma_version": "1"', b'"chroma_version": "%s"' % version.encode())
        )
    return build_archive(members, manifest_json=raw)


def _store_files(app: FastAPI) -> list[Path]:
    root: Path = app.state.ctx.store.root
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def _counts(app: FastAPI) -> tuple[int, int]:
    async with app.state.ctx.engine.connect() as conn:
        instances = await conn.scalar(select(func.count()).select_from(Instance)) or 0
        snapshots = await conn.scalar(select(func.count()).select_from(Snapshot)) or 0
    return instances, snapshots


async def _import(
    client: httpx.AsyncClient, token: str, body: bytes, name: str = "moved", **headers: str
) -> httpx.Response:
    return await client.post(
        "/v1/instances/import",
        params={"name": name},
        content=body,
        headers={**bearer(token), **ZSTD, **headers},
    )


async def test_import_creates_an_instance_loading_a_ready_import_snapshot(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    _, token = await create_tenant(client, "acme")
    data = _archive()
    answer = await _import(client, token, data)
    assert answer.status_code == 202, answer.text
    instance = answer.json()["instance"]
    assert instance["name"] == "moved"
    async with api_app.state.ctx.engine.connect() as conn:
        row = (await conn.execute(select(Instance.restore_snapshot_id))).one()
        snapshot = (await conn.execute(select(Snapshot))).one()
    assert row.restore_snapshot_id == snapshot.id
    assert (snapshot.kind, snapshot.phase) == ("import", "ready")
    assert str(snapshot.instance_id) == instance["id"]
    assert snapshot.checksum == hashlib.sha256(data).hexdigest()
    assert snapshot.size_bytes == len(data)
    assert [p.read_bytes() for p in _store_files(api_app)] == [data]

    exported = await client.get(f"/v1/snapshots/{snapshot.id}/archive", headers=bearer(token))
    assert exported.status_code == 200, exported.text
    assert exported.content == data
    assert exported.headers["content-type"] == "application/octet-stream"
    assert exported.headers["content-length"] == str(len(data))
    assert exported.headers["x-checksum-sha256"] == snapshot.checksum
    assert exported.headers["repr-digest"].startswith("sha-256=:")
    assert f"snapshot-{snapshot.id}.tar.zst" in exported.headers["content-disposition"]


HOSTILE = {
    "not_an_archive": (b"hello, not an archive" * 50, 422, "invalid_archive"),
    "traversal": (
        build_archive([file_member("ok", b"x"), file_member("../../etc/evil", b"y")]),
        422,
        "invalid_archive",
    ),
    "symlink": (
        build_archive([special_member("link", tarfile.SYMTYPE, "/etc/passwd")]),
        422,
        "invalid_archive",
    ),
    "truncated": (_archive()[:-40], 422, "invalid_archive"),
    "chroma_0x": (_archive("0.6.3"), 422, "incompatible_chroma_version"),
    "empty": (b"", 422, "invalid_archive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_refused_upload_leaves_nothing(
    client: httpx.AsyncClient, api_app: FastAPI, case: str
) -> None:
    assert server_version() is not None  # chromadb is installed: the version is checked
    _, token = await create_tenant(client, "acme")
    body, status, code = HOSTILE[case]
    answer = await _import(client, token, body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == code
    if case == "chroma_0x":
        assert "0.6.3" in answer.json()["detail"]
    assert await _counts(api_app) == (0, 0)
    assert _store_files(api_app) == []


async def test_wrong_media_type_and_too_large_are_refused(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    _, token = await create_tenant(client, "acme")
    as_json = await _import(client, token, _archive(), **{"Content-Type": "application/json"})
    assert as_json.status_code == 415, as_json.text
    api_app.state.ctx.snapshot_policy = _with_limit(api_app, 100)

    async def body() -> Any:  # no Content-Length: the limit is counted while streaming
        for _ in range(10):
            yield b"\0" * 50

    streamed = await client.post(
        "/v1/instances/import",
        params={"name": "big"},
        content=body(),
        headers={**bearer(token), **ZSTD},
    )
    assert streamed.status_code == 413, streamed.text
    declared = await _import(client, token, b"\0" * 500)
    assert declared.status_code == 413, declared.text
    assert await _counts(api_app) == (0, 0)
    assert _store_files(api_app) == []


def _with_limit(app: FastAPI, limit: int) -> Any:
    from dataclasses import replace

    return replace(app.state.ctx.snapshot_policy, max_import_bytes=limit)


async def test_import_is_idempotent_and_quota_bound(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    _, token = await create_tenant(client, "acme")
    data = _archive()
    first = await _import(client, token, data, **{"Idempotency-Key": "k1"})
    again = await _import(client, token, data, **{"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["instance"]["id"] == again.json()["instance"]["id"]
    other = await _import(client, token, _archive("1.0.0"), **{"Idempotency-Key": "k1"})
    assert other.status_code == 409, other.text
    assert other.json()["code"] == "idempotency_key_reused"
    assert await _counts(api_app) == (1, 1)
    assert len(_store_files(api_app)) == 1
    from dataclasses import replace

    api_app.state.ctx.snapshot_policy = replace(api_app.state.ctx.snapshot_policy, max_per_tenant=1)
    over = await _import(client, token, data, name="second")
    assert over.status_code == 429, over.text
    assert await _counts(api_app) == (1, 1)


async def test_export_refuses_foreign_unknown_and_unready(
    client: httpx.AsyncClient, api_app: FastAPI
) -> None:
    _, owner = await create_tenant(client, "acme")
    _, other = await create_tenant(client, "other")
    instance_id = (
        await client.post("/v1/instances", json={"name": "main"}, headers=bearer(owner))
    ).json()["instance"]["id"]
    pending = (
        await client.post(f"/v1/instances/{instance_id}/snapshots", headers=bearer(owner))
    ).json()
    unready = await client.get(f"/v1/snapshots/{pending['id']}/archive", headers=bearer(owner))
    assert unready.status_code == 409, unready.text
    foreign = await client.get(f"/v1/snapshots/{pending['id']}/archive", headers=bearer(other))
    assert foreign.status_code == 404
    unknown = await client.get(f"/v1/snapshots/{uuid.uuid4()}/archive", headers=bearer(owner))
    assert unknown.status_code == 404
    imported = (await _import(client, owner, _archive())).json()["instance"]["id"]
    async with api_app.state.ctx.engine.connect() as conn:
        sid = await conn.scalar(
            select(Snapshot.id).where(Snapshot.instance_id == uuid.UUID(imported))
        )
    for path in _store_files(api_app):
        path.unlink()
    missing = await client.get(f"/v1/snapshots/{sid}/archive", headers=bearer(owner))
    assert missing.status_code == 404, missing.text

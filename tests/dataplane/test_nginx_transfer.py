"""Snapshot imports and exports through real Nginx (deploy/nginx.conf) in front of
the real service: an import is not held to the server-wide body limit and is
streamed to the service (which enforces ``snapshots.max_import_bytes`` itself), and
an export arrives intact (its SHA-256 is the snapshot's checksum).

To keep the test fast, the server-wide limit (256m) is lowered to 1m in a copy of
the configuration: an import of a few MiB then stands for one larger than 256m."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from chroma_orch.dataplane.nginx import SCRIPT, default_source
from tests.dataplane.nginx_proc import running_nginx
from tests.e2e.service import running_service
from tests.helpers import bearer, create_tenant
from tests.snapshots.helpers import build_archive, file_member

LIMIT = 8 * 2**20
"""The service's max_import_bytes in this test."""
ZSTD = {"Content-Type": "application/zstd"}


def _lowered_config(into: Path) -> Path:
    """deploy/nginx.conf with the server-wide body limit at 1m."""
    source = default_source()
    text = source.read_text()
    assert text.count("client_max_body_size 256m;") == 1
    into.mkdir()
    shutil.copyfile(source.parent / SCRIPT, into / SCRIPT)
    config = into / source.name
    config.write_text(text.replace("client_max_body_size 256m;", "client_max_body_size 1m;"))
    return config


async def _refused_mid_upload(url: str, token: str) -> bytes:
    """A chunked upload past LIMIT whose end never comes: the service's answer
    arrives anyway only if Nginx streams the body to it (a buffering Nginx would
    wait for the end until client_body_timeout, 120 s)."""
    address = urlsplit(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    head = (
        "POST /v1/instances/import?name=big HTTP/1.1\r\n"
        f"Host: {address.netloc}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/zstd\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(head.encode())
    chunk = os.urandom(2**20)
    for _ in range(LIMIT // len(chunk) + 2):
        writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(4096), 60)  # no final chunk sent
    finally:
        writer.close()


async def test_import_past_the_server_wide_limit_streams_and_export_verifies(
    database_url: str, tmp_path: Path
) -> None:
    payload = os.urandom(3 * 2**20)  # incompressible: the archive is > 1m
    archive = build_archive([file_member("imported.bin", payload)])
    assert len(archive) > 2**20
    env = {"CHROMA_ORCH_SNAPSHOTS__MAX_IMPORT_BYTES": str(LIMIT)}
    async with (
        running_service(database_url, tmp_path / "data", **env) as service,
        running_nginx(service.port, _lowered_config(tmp_path / "conf")) as nginx,
    ):
        async with service.client() as admin:
            _, token = await create_tenant(admin, "acme")
        async with httpx.AsyncClient(base_url=nginx.url, timeout=60) as http:
            imported = await http.post(
                "/v1/instances/import",
                params={"name": "moved"},
                content=archive,
                headers={**bearer(token), **ZSTD},
            )
            assert imported.status_code == 202, imported.text[:300]
            elsewhere = await http.post("/v1/tenants", content=archive, headers=bearer(token))
            assert elsewhere.status_code == 413  # Nginx's own limit, off the import route
            instance_id = imported.json()["instance"]["id"]
            listed = await http.get(f"/v1/instances/{instance_id}/snapshots", headers=bearer(token))
            (snapshot,) = listed.json()["items"]
            assert (snapshot["kind"], snapshot["phase"]) == ("import", "ready")

            digest = hashlib.sha256()
            path = f"/v1/snapshots/{snapshot['id']}/archive"
            async with http.stream("GET", path, headers=bearer(token)) as exported:
                assert exported.status_code == 200
                async for piece in exported.aiter_bytes():
                    digest.update(piece)
            assert exported.headers["x-checksum-sha256"] == snapshot["checksum"]
            assert digest.hexdigest() == snapshot["checksum"]
            assert digest.hexdigest() == hashlib.sha256(archive).hexdigest()

        answer = await _refused_mid_upload(nginx.url, token)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"application/problem+json" in rest  # the service's answer, not Nginx's page

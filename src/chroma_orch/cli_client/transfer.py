"""``chroma-orch snapshots export`` and the upload half of ``instances import``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from chroma_orch.cli_client import admin, follow, progress, render
from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import EXIT_CODES, FAILED, OK, CliError
from chroma_orch.cli_client.options import Globals, Wait
from chroma_orch.cli_client.runner import run

UPLOAD_TIMEOUT = 3600.0
"""Seconds an upload (and the server's check of it) may take."""


def add_export(snapshots: typer.Typer) -> None:
    """Add ``export`` to the ``snapshots`` command group."""
    snapshots.command("export", help="download a ready snapshot's archive", epilog=EXIT_CODES)(
        export_command
    )


def export_command(
    ctx: typer.Context,
    snapshot_id: Annotated[str, typer.Argument(metavar="SID", help="snapshot id")],
    output: Annotated[Path, typer.Option("-o", "--output", help="the archive file to write")],
) -> int:
    return run(ctx, lambda api, o: export(api, o, snapshot_id, output))


def export(api: Api, options: Globals, snapshot_id: str, output: Path) -> int:
    """Stream the archive into ``output`` (written as ``output.part``, renamed once its
    SHA-256 matches the service's); exit 1 and no file on a mismatch."""
    part = output.with_name(output.name + ".part")
    digest, size = hashlib.sha256(), 0
    with api.download(f"/v1/snapshots/{snapshot_id}/archive") as answer, part.open("wb") as file:
        expected = answer.headers.get("X-Checksum-SHA256", "").lower()
        for chunk in answer.iter_bytes(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
            file.write(chunk)
    if digest.hexdigest() != expected:
        part.unlink()
        raise CliError(
            FAILED,
            f"checksum mismatch: got {digest.hexdigest()}, the service "
            f"says {expected or 'nothing'}; no file written",
        )
    os.replace(part, output)
    result = {"snapshot_id": snapshot_id, "path": str(output), "size": size, "sha256": expected}
    if options.json:
        render.emit_json(result)
    else:
        render.out(f"wrote {output} ({size} bytes, sha256 {expected})")
    return OK


def upload(
    api: Api,
    options: Globals,
    body: Iterable[bytes],
    query: dict[str, Any],
    wait: Wait,
    headers: dict[str, str] | None = None,
) -> int:
    """POST the archive ``body`` to /v1/instances/import; show (or wait for) the instance."""
    if query.get("tenant_id"):
        query["tenant_id"] = admin.tenant_id(api, query["tenant_id"])
    answer = api.post(
        "/v1/instances/import",
        params={k: v for k, v in query.items() if v is not None},
        content=body,
        headers={"Content-Type": "application/zstd", **(headers or {})},
        timeout=UPLOAD_TIMEOUT,
    )
    instance = answer["instance"]
    if wait.enabled:
        with progress.phases(instance["name"], quiet=options.json) as report:
            instance = follow.wait_for_phase(api, instance, "running", wait.timeout, report)
    if options.json:
        render.emit_json(instance)
    else:
        render.out(
            render.describe(instance) if wait.enabled else render.accepted(instance, "import")
        )
    return OK


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            yield chunk

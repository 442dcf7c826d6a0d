"""``chroma-orch instances import PATH``: a Chroma persist directory (packed here, as
it streams up) or an archive file becomes a new instance. Above ``cli_client``: it
packs with ``chroma_orch.snapshots``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from chroma_orch.cli_client import transfer
from chroma_orch.cli_client.exits import EXIT_CODES, USAGE, CliError
from chroma_orch.cli_client.options import WAIT_TIMEOUT, Timeout, Wait, tenant_option, wait_flag
from chroma_orch.cli_client.runner import run
from chroma_orch.domain.snapshot_archives import check_server_compatible
from chroma_orch.snapshots.archive import (
    ArchiveError,
    IncompatibleArchiveError,
    Manifest,
    chroma_version_of,
    pack_stream,
)


def import_command(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(metavar="PATH", help="a Chroma persist directory, or an archive file"),
    ],
    name: Annotated[str, typer.Option("--name", help="the new instance's name (a DNS label)")],
    tenant: Annotated[
        str | None, tenant_option("owning tenant (required with an admin token)")
    ] = None,
    wait: Annotated[bool, wait_flag("it is running or failed")] = False,
    timeout: Timeout = WAIT_TIMEOUT,
) -> int:
    query: dict[str, object] = {"name": name, "tenant_id": tenant}
    wanted = Wait(wait, timeout)
    return run(ctx, lambda api, o: transfer.upload(api, o, body_of(path), query, wanted))


def register(instances: typer.Typer) -> None:
    """Add ``import`` to the ``instances`` command group."""
    instances.command(
        "import",
        help="create an instance from a Chroma persist directory or a snapshot archive",
        epilog=EXIT_CODES,
    )(import_command)


def body_of(path: Path) -> Iterator[bytes]:
    """The archive to upload: the file itself, or ``path`` packed on the fly once its
    Chroma major version was found compatible (refused before any byte is sent)."""
    if path.is_file():
        return transfer.file_chunks(path)
    if not path.is_dir():
        raise CliError(USAGE, f"{path} is neither a directory nor a file")
    version = chroma_version_of(path)
    if version is None and not (path / "chroma.sqlite3").exists() and any(path.iterdir()):
        raise CliError(USAGE, f"{path} is not a Chroma persist directory (no chroma.sqlite3)")
    try:
        check_server_compatible(version)
    except IncompatibleArchiveError as error:
        raise CliError(USAGE, f"{path}: {error.message}") from None
    manifest = Manifest(instance_id="", chroma_version=version, created_at=datetime.now(UTC))
    return _blocking(pack_stream(path, manifest))


def _blocking(chunks: AsyncGenerator[bytes, None]) -> Iterator[bytes]:
    """An async chunk stream as a plain iterator (httpx's sync upload reads it), on an
    event loop of its own."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(chunks))
            except StopAsyncIteration:
                return
            except ArchiveError as error:  # e.g. a symbolic link in the directory
                raise CliError(USAGE, f"cannot pack the directory: {error.message}") from None
    finally:
        loop.run_until_complete(chunks.aclose())
        loop.close()

"""What a snapshot's archive is called in the store, and what its manifest says."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from chroma_orch.db.models import Snapshot
from chroma_orch.snapshots.archive import Manifest, check_compatible, chroma_version_of


def archive_key(snapshot: Snapshot, attempt: str) -> str:
    """``<tenant>/<instance>/<snapshot>.<attempt>.tar.zst``: a tenant's archives share
    a prefix, and each try of a capture stores under a key of its own (the late put of
    a replica that lost the lease cannot replace the archive another try recorded)."""
    return f"{snapshot.tenant_id}/{snapshot.instance_id}/{snapshot.id}.{attempt}.tar.zst"


@functools.cache
def server_version() -> str | None:
    """The Chroma version this host's servers run (the installed ``chromadb``)."""
    try:
        return metadata.version("chromadb")
    except metadata.PackageNotFoundError:
        return None


def check_server_compatible(archive_version: str | None) -> None:
    """Refuse data another Chroma major version wrote (``IncompatibleArchiveError``);
    without ``chromadb`` installed here, the server's version is unknown: not checked."""
    version = server_version()
    if version is not None:
        check_compatible(archive_version, version)


def manifest_for(snapshot: Snapshot, source: Path) -> Manifest:
    """The manifest of ``snapshot``'s archive of the persist directory ``source``."""
    return Manifest(
        instance_id=str(snapshot.instance_id),
        chroma_version=server_version() or chroma_version_of(source),
        created_at=datetime.now(UTC),
    )

"""The manifest every archive starts with, and what Chroma version wrote a directory."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from chroma_orch.snapshots.errors import IncompatibleArchiveError, NotAnArchiveError

FORMAT_VERSION = 1
MANIFEST_NAME = "chroma-orch-snapshot.json"
MAX_MANIFEST_BYTES = 64 * 1024


@dataclass(frozen=True)
class Manifest:
    """``chroma-orch-snapshot.json``, the archive's first member. ``file_count`` and
    ``total_bytes`` count the persist directory's regular files (``pack`` fills them
    in); ``chroma_version`` is ``None`` for a directory Chroma has not written yet."""

    instance_id: str
    chroma_version: str | None
    created_at: datetime
    file_count: int = 0
    total_bytes: int = 0
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        fields = asdict(self) | {"created_at": self.created_at.isoformat()}
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """The manifest in ``raw``; ``NotAnArchiveError`` when it is not a valid one of
        a format version this code reads."""
        try:
            fields: Any = json.loads(raw)
            if fields.get("format_version") != FORMAT_VERSION:
                raise NotAnArchiveError(
                    f"archive format {fields.get('format_version')!r} is not supported "
                    f"(this version reads format {FORMAT_VERSION})"
                )
            manifest = cls(**fields | {"created_at": datetime.fromisoformat(fields["created_at"])})
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
            raise NotAnArchiveError(f"the archive's manifest is not valid: {error}") from None
        _check_types(manifest)
        return manifest


def _check_types(manifest: Manifest) -> None:
    valid = (
        isinstance(manifest.instance_id, str)
        and (manifest.chroma_version is None or isinstance(manifest.chroma_version, str))
        and all(type(n) is int and n >= 0 for n in (manifest.file_count, manifest.total_bytes))
    )
    if not valid:
        raise NotAnArchiveError("the archive's manifest has fields of the wrong type")


# Chroma writes no version into a persist directory; its SQLite schema says which
# generation wrote it. The `migrations` table lists the schema migrations applied;
# chromadb 1.x (the Rust core) applies sysdb migration 9
# ("00009-segment-collection-not-null") and later, 0.4-0.6 stop before it.
# chromadb 1.5.9 writes sysdb 1-10, metadb 1-6, embeddings_queue 1-2.
_FIRST_SYSDB_OF_MAJOR = ((9, "1"), (1, "0"))


def chroma_version_of(persist_dir: Path) -> str | None:
    """The major version of the Chroma that wrote ``persist_dir`` (``"1"``, ``"0"``),
    from the schema migrations in its ``chroma.sqlite3``; ``None`` when there is no
    such database (an empty directory, or not Chroma's). Only the major is knowable:
    the minor releases of one major share a schema."""
    database = persist_dir / "chroma.sqlite3"
    if not database.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as connection:
            row = connection.execute(
                "SELECT max(version) FROM migrations WHERE dir = 'sysdb'"
            ).fetchone()
    except sqlite3.Error:
        return None
    sysdb = row[0] if row else None
    if not isinstance(sysdb, int):
        return None
    return next(major for first, major in _FIRST_SYSDB_OF_MAJOR if sysdb >= first)


def check_compatible(archive_version: str | None, server_version: str) -> None:
    """Refuse (``IncompatibleArchiveError``) data written by another Chroma major
    version than ``server_version``'s; data of unknown version (an empty directory)
    goes anywhere."""
    if archive_version is None:
        return
    archive_major = archive_version.split(".")[0]
    server_major = server_version.split(".")[0]
    if archive_major != server_major:
        raise IncompatibleArchiveError(
            f"the data was written by Chroma {archive_version} (major {archive_major}), "
            f"the server runs Chroma {server_version} (major {server_major}); Chroma "
            "does not read another major version's persist directory"
        )

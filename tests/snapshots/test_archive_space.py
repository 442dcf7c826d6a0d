"""Disk full during unpack, for real: the archive is extracted into a 1 MiB tmpfs
mounted in a user and mount namespace of its own (``unshare -rm``, no privilege)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chroma_orch.snapshots.archive import pack
from tests.snapshots.helpers import Collect, manifest

EXTRACT = """
import asyncio, sys
from pathlib import Path
from chroma_orch.snapshots.archive import ArchiveSpaceError, unpack

async def chunks():
    with open(sys.argv[1], "rb") as file:
        while chunk := file.read(65536):
            yield chunk

target = Path(sys.argv[2]) / "out"
try:
    asyncio.run(unpack(chunks(), target, None))
    print("extracted")
except ArchiveSpaceError as error:
    print(error.reason, "left behind" if target.exists() else "nothing left")
"""


def can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="unshare -rm cannot mount a tmpfs here")
def test_a_full_disk_is_archive_space_error_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # 3 MiB into 1 MiB
    sink = Collect()
    asyncio.run(pack(source, sink, manifest()))
    archive = tmp_path / "archive.tar.zst"
    archive.write_bytes(sink.data)
    mount = tmp_path / "small"
    mount.mkdir()
    script = 'mount -t tmpfs -o size=1m tmpfs "$2" && "$0" -c "$1" "$3" "$2" && ls -A "$2"'
    command = [
        "unshare",
        "-rm",
        "sh",
        "-c",
        script,
        sys.executable,
        EXTRACT,
        str(mount),
        str(archive),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "NoSpace nothing left"

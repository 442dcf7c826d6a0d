"""Replacing a local instance's data directory atomically, across crashes.

A restore writes the new data beside the old (``<id>.incoming``), then swaps with two
renames: ``<id>`` → ``<id>.previous``, ``<id>.incoming`` → ``<id>``, and removes
``<id>.previous``. A crash between the renames leaves ``<id>.previous`` without
``<id>``: ``finish_swap`` moves it back (the restore, still pending, runs again); a
crash after them leaves both: the swap happened, ``<id>.previous`` is removed. Either
way the instance has its old data or its new, never a mix. Blocking: call from a
worker thread.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def previous_of(data: Path) -> Path:
    return data.with_name(f"{data.name}.previous")


def finish_swap(data: Path) -> None:
    """Undo or complete a swap a crash interrupted (nothing to do otherwise). Must run
    before anything creates ``data`` anew (a server's start)."""
    previous = previous_of(data)
    if not previous.exists():
        return
    if data.exists():
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.rename(previous, data)
        _sync_dir(data.parent)


def swap_in(incoming: Path, data: Path) -> None:
    """Make ``incoming`` the data directory ``data``; the old one is removed."""
    _sync_tree(incoming)  # the new files are on disk before a rename makes them the data
    previous = previous_of(data)
    if data.exists():
        os.rename(data, previous)
    os.rename(incoming, data)
    _sync_dir(data.parent)
    shutil.rmtree(previous, ignore_errors=True)


def _sync_tree(root: Path) -> None:
    """fsync every file and directory under ``root``: its data is on disk, and only
    its (``os.sync`` would also wait for whatever else the machine has to write)."""
    for top, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(top, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_dir(Path(top))


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

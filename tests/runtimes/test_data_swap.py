"""The local runtime's data swap across crashes (``runtimes/local/data_swap.py``): an
instance has its old data or its new one, never none and never a mix."""

from __future__ import annotations

from pathlib import Path

import pytest

from chroma_orch.runtimes.local.runtime import LocalRuntime
from chroma_orch.runtimes.local.settings import LocalRuntimeSettings

INSTANCE = "0b6f9c1e-8a4e-4a57-9f4e-3f1c2a7d9b10"


@pytest.fixture
def runtime(tmp_path: Path) -> LocalRuntime:
    return LocalRuntime(LocalRuntimeSettings(), tmp_path)


def _dir(path: Path, content: str) -> None:
    path.mkdir(parents=True)
    (path / "chroma.sqlite3").write_text(content)


def test_a_crash_between_the_renames_is_undone_before_the_data_is_read(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    instances = tmp_path / "instances"
    _dir(instances / f"{INSTANCE}.previous", "old")  # moved aside, the new not in yet
    data = runtime.data_path(INSTANCE)
    assert (data / "chroma.sqlite3").read_text() == "old"
    assert not (instances / f"{INSTANCE}.previous").exists()


def test_a_crash_after_the_renames_keeps_the_new_data(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    instances = tmp_path / "instances"
    _dir(instances / f"{INSTANCE}.previous", "old")
    _dir(instances / INSTANCE, "new")
    data = runtime.data_path(INSTANCE)
    assert (data / "chroma.sqlite3").read_text() == "new"
    assert not (instances / f"{INSTANCE}.previous").exists()


async def test_a_failed_fill_leaves_the_data_untouched(
    runtime: LocalRuntime, tmp_path: Path
) -> None:
    _dir(tmp_path / "instances" / INSTANCE, "old")

    async def fill(into: Path) -> None:
        _dir(into, "half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await runtime.replace_data(INSTANCE, fill)
    assert (runtime.data_path(INSTANCE) / "chroma.sqlite3").read_text() == "old"
    assert sorted(p.name for p in (tmp_path / "instances").iterdir()) == [INSTANCE]


async def test_replace_data_swaps_in_the_new_data(runtime: LocalRuntime, tmp_path: Path) -> None:
    _dir(tmp_path / "instances" / INSTANCE, "old")

    async def fill(into: Path) -> None:
        _dir(into, "new")

    await runtime.replace_data(INSTANCE, fill)
    assert (runtime.data_path(INSTANCE) / "chroma.sqlite3").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "instances").iterdir()) == [INSTANCE]

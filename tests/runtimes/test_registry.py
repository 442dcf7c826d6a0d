"""Runtimes are found by name in the chroma_orch.runtimes entry points."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from chroma_orch.runtimes import registry
from chroma_orch.runtimes.factory import build_runtime
from chroma_orch.settings import Settings


def register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dist: str, **points: str) -> None:
    """Install entry points the way an installed distribution has them: a
    ``*.dist-info`` directory on ``sys.path``."""
    info = tmp_path / dist / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in points.items())
    (info / "entry_points.txt").write_text(f"[{registry.GROUP}]\n{lines}")
    monkeypatch.syspath_prepend(str(tmp_path / dist))


def test_the_built_in_runtimes_are_registered() -> None:
    assert {"local", "ecs"} <= set(registry.names())
    assert Settings(runtime="ecs").runtime == "ecs"


def test_the_runtime_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHROMA_ORCH_RUNTIME", "ecs")
    assert Settings().runtime == "ecs"


def test_an_unknown_runtime_is_refused_naming_the_registered_ones() -> None:
    with pytest.raises(ValidationError, match=r"unknown runtime 'nope'; registered: .*ecs, local"):
        Settings(runtime="nope")


def test_one_runtime_registered_twice_alike_counts_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed copy and a development copy of one package register the same."""
    target = "tests.fake_runtime:build"
    register(tmp_path, monkeypatch, "one", fake=target)
    register(tmp_path, monkeypatch, "two", fake=target)
    assert registry.registered()["fake"].value == target


def test_two_runtimes_under_one_name_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(tmp_path, monkeypatch, "one", fake="tests.fake_runtime:build")
    register(tmp_path, monkeypatch, "two", fake="elsewhere:build")
    with pytest.raises(registry.RegistryError, match="'fake' is registered twice"):
        registry.names()


def test_an_entry_point_that_names_no_builder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(tmp_path, monkeypatch, "odd", odd="chroma_orch.runtimes.registry:GROUP")
    with pytest.raises(registry.RegistryError, match="not a function"):
        build_runtime(Settings(runtime="odd"))

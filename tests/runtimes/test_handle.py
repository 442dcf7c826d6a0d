"""The typed handle keeps the JSON shape instance rows have always stored."""

from __future__ import annotations

import pytest

from chroma_orch.runtimes.base import Handle

STORED_LOCAL = {
    "instance_id": "0b5e",
    "pid": 4242,
    "create_time": 1.5,
    "host": "127.0.0.1",
    "port": 30001,
    "path": "/d/instances/0b5e",
    "lock": "/d/instances/0b5e.lock",
    "log": "/d/logs/0b5e.log",
    "log_offset": 0,
    "generation": 3,
}
STORED_ECS = {"instance_id": "0b5e", "task_arn": "arn:t", "cluster": "c", "generation": None}


@pytest.mark.parametrize("stored", [STORED_LOCAL, STORED_ECS])
def test_a_stored_handle_loads_and_saves_unchanged(stored: dict[str, object]) -> None:
    handle = Handle.from_json(stored)
    assert handle.generation == stored["generation"]
    assert "generation" not in handle.data
    assert handle.to_json() == stored


def test_a_handle_without_generation_loads_as_unknown() -> None:
    assert Handle.from_json({"task_arn": "arn:t"}).generation is None
    assert Handle.load(None) is None


def test_generation_is_declared_not_data() -> None:
    with pytest.raises(ValueError, match="declared field"):
        Handle(1, {"generation": 2})


def test_handle_data_cannot_be_changed_behind_the_runtime() -> None:
    source = {"pid": 1}
    handle = Handle(1, source)
    source["pid"] = 2
    assert handle.data["pid"] == 1
    with pytest.raises(TypeError):
        handle.data["pid"] = 3  # type: ignore[index]

"""The parity probe of guarded upgrades, against a real Chroma server: what it records,
and that the comparison catches what an upgrade could break."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.config import Settings as ChromaSettings

from chroma_orch.reconciler import parity
from chroma_orch.runtimes.base import InstanceSpec, ObservedState
from chroma_orch.runtimes.local.runtime import LocalRuntime
from chroma_orch.settings import LocalRuntimeSettings
from tests.runtimes.test_local_runtime import free_port


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    runtime = LocalRuntime(LocalRuntimeSettings(), tmp_path / "data")
    spec = InstanceSpec(
        instance_id="probe", tenant_id="t", name="p", generation=1, port=free_port()
    )
    handle = await runtime.start(spec)
    ready = await runtime.wait_ready(handle, 30)
    assert ready.state is ObservedState.RUNNING
    assert ready.endpoint is not None
    try:
        yield ready.endpoint.url
    finally:
        await runtime.stop(handle)
        await runtime.aclose()


def _client(url: str) -> Any:
    host, port = url.removeprefix("http://").split(":")
    return chromadb.HttpClient(
        host=host, port=int(port), settings=ChromaSettings(anonymized_telemetry=False)
    )


def _fill(url: str) -> None:
    client = _client(url)
    docs = client.create_collection("docs", metadata={"plan": "gold"})
    docs.add(
        ids=[f"d{i}" for i in range(20)],
        embeddings=[[float(i), float(i % 3), 1.0] for i in range(20)],
    )
    client.create_collection("empty")


async def _record(url: str) -> dict[str, Any]:
    return await parity.record(url, collections=10, timeout=10)


async def test_a_recording_of_the_same_data_matches_itself(server: str) -> None:
    await asyncio.to_thread(_fill, server)
    first, second = await _record(server), await _record(server)
    assert parity.compare(first, second) == []
    docs = first["databases"]["default_database"]["docs"]
    assert docs["count"] == 20
    assert docs["metadata"] == {"plan": "gold"}
    assert len(docs["sample_ids"]) == parity.SAMPLE
    assert len(docs["neighbours"]) == parity.NEIGHBOURS
    assert first["databases"]["default_database"]["empty"]["count"] == 0


async def test_lost_records_collections_and_neighbours_are_differences(server: str) -> None:
    await asyncio.to_thread(_fill, server)
    before = await _record(server)

    def damage() -> None:
        client = _client(server)
        client.delete_collection("empty")
        docs = client.get_collection("docs")
        docs.delete(ids=[f"d{i}" for i in range(10, 20)])
        docs.modify(metadata={"plan": "free"})
        client.create_collection("new")

    await asyncio.to_thread(damage)
    differences = parity.compare(before, await _record(server))
    text = "\n".join(differences)
    assert "collection default_database/empty is missing" in text
    assert "collection default_database/new appeared" in text
    assert "docs: metadata was {'plan': 'gold'}, is {'plan': 'free'}" in text
    assert "docs: count was 20, is 10" in text


def test_distances_may_differ_by_rounding_only() -> None:
    def recording(distance: float) -> dict[str, Any]:
        entry = {"id": "x", "count": 1, "sample_ids": ["a"], "neighbours": ["a"]}
        return {"databases": {"db": {"c": entry | {"distances": [distance]}}}}

    assert parity.compare(recording(0.5), recording(0.5 + 1e-7)) == []
    assert parity.compare(recording(0.5), recording(0.6)) == [
        "collection db/c: distances were [0.5], are [0.6]"
    ]


async def test_a_server_that_does_not_answer_is_unavailable() -> None:
    with pytest.raises(parity.ProbeUnavailableError):
        await parity.record(f"http://127.0.0.1:{free_port()}", collections=1, timeout=1)

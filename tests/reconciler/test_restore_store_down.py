"""A restore while the snapshot store is down: the pass that cannot keep the data the
restore would replace stops reading the archive too, against real PostgreSQL, real
data directories and an S3 endpoint that drops every connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aioboto3
import httpx
import pytest
from aiobotocore.config import AioConfig

from chroma_orch.context import AppContext
from chroma_orch.db.models import Instance, Snapshot
from chroma_orch.reconciler.loop import Reconciler
from chroma_orch.settings import Settings
from chroma_orch.snapshots.s3_store import S3Store
from tests.reconciler.conftest import instance_with_data
from tests.reconciler.doubles import DataFakeRuntime
from tests.reconciler.with_data import ask_restore


class DroppingEndpoint:
    """A TCP listener that closes each connection once it read the request line: an
    S3 that is down. ``requests`` has the lines (the client sends a request whose
    connection was dropped once more: two lines a request)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> DroppingEndpoint:
        async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.requests.append((await reader.readline()).decode(errors="replace"))
            writer.close()

        self._server = await asyncio.start_server(drop, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def down_s3() -> AsyncIterator[DroppingEndpoint]:
    async with DroppingEndpoint() as endpoint:
        yield endpoint


def one_try_store(endpoint: DroppingEndpoint) -> S3Store:
    """An S3 store whose client tries each request once: one connection a request."""
    session = aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    config = AioConfig(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=2)
    return S3Store(
        "snapshots", session=session, endpoint_url=endpoint.url, client_kwargs={"config": config}
    )


async def test_a_restore_that_cannot_keep_the_data_stops_loading(
    client: httpx.AsyncClient,
    ctx: AppContext,
    data_runtime: DataFakeRuntime,
    api_settings: Settings,
    down_s3: DroppingEndpoint,
) -> None:
    """The archive is read while the ``pre_restore`` snapshot is packed. With the store
    down the snapshot's attempt fails, and the pass ends with its retry; the read
    stopped there too. Before, the read went on through its own
    ``snapshots.attempts`` tries with backoff (1 + 2 + 4 + 8 s at the default 5), at
    every pass, so a restore with the store down took minutes to fail."""
    assert api_settings.snapshots.attempts == 5
    reconciler = Reconciler(ctx.sessions, data_runtime, api_settings, store=one_try_store(down_s3))
    token, instance_id = await instance_with_data(client, reconciler, data_runtime)
    async with ctx.sessions() as session:  # a snapshot stored while the store was up
        instance = uuid.UUID(instance_id)
        row = await session.get(Instance, instance)
        assert row is not None
        earlier = Snapshot(
            instance_id=instance,
            tenant_id=row.tenant_id,
            kind="manual",
            phase="ready",
            store="s3",
            location="earlier.tar.zst",
            checksum="0" * 64,
            size_bytes=1,
        )
        session.add(earlier)
        await session.commit()
        earlier_id = earlier.id

    restore = await ask_restore(client, token, instance_id, str(earlier_id))
    assert restore.status_code == 202, restore.text
    for _ in range(10):  # to the pass that packs the pre_restore snapshot and loads
        await reconciler.run_once()
        await reconciler.drain()
        if down_s3.requests:
            break
    await asyncio.sleep(1.5)  # a read still going would try again here (1 s backoff)

    reads = [line for line in down_s3.requests if line.startswith("GET ")]
    assert any(line.startswith("PUT ") for line in down_s3.requests), down_s3.requests
    # the restore's archive was read once (2 lines), not at each of its 5 tries (10)
    assert len(reads) <= 2, down_s3.requests
    assert (data_runtime.data_path(instance_id) / "chroma.sqlite3").read_text() == "data"

"""``/v1/events?snapshot=none``: ``snapshot`` and ``resync`` carry ``seq`` (and
``reason``) but no instance list, so a large fleet's socket starts (and resyncs)
with a frame of a few dozen bytes; the default (``full``) is unchanged."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chroma_orch.db.models import Event
from chroma_orch.db.retention import Retention
from chroma_orch.settings import RetentionSettings
from tests.conftest import ADMIN_TOKEN
from tests.events.live import LiveServer, emit, receive, receive_events
from tests.fleet_rows import insert_fleet
from tests.helpers import bearer

FLEET = 2000


async def _newest(live: LiveServer) -> int:
    async with live.ctx.sessions() as session:
        return int(await session.scalar(select(func.max(Event.seq))) or 0)


async def test_a_snapshot_without_instances_then_events(live: LiveServer) -> None:
    await insert_fleet(live.ctx.engine, instances=3, tenants=1)
    await emit(live.ctx, 2)
    async with live.connect("/v1/events?snapshot=full") as ws:
        full = await receive(ws)
    assert full["type"] == "snapshot"
    assert len(full["instances"]) == 3
    async with live.connect("/v1/events?snapshot=none") as ws:
        snapshot = await receive(ws)
        assert snapshot == {"type": "snapshot", "seq": await _newest(live)}
        assert snapshot["seq"] == full["seq"]
        last = await emit(live.ctx, 3)
        seqs = [e["seq"] for e in await receive_events(ws, 3)]
        assert seqs == list(range(snapshot["seq"] + 1, last + 1))
    # the state, read instead: the list's page is valid at a seq no older than the snapshot's
    async with httpx.AsyncClient(base_url=live.url, headers=bearer(ADMIN_TOKEN)) as http:
        page = (await http.get("/v1/instances")).json()
    assert len(page["items"]) == 3
    assert page["seq"] >= snapshot["seq"]


async def test_an_expired_cursor_resyncs_without_instances(live: LiveServer) -> None:
    await live.ctx.loops.cancel(["retention"])  # it would race the pass below
    await insert_fleet(live.ctx.engine, instances=3, tenants=1)
    await emit(live.ctx, 10)
    async with live.ctx.sessions() as session:
        await session.execute(text("UPDATE events SET created_at = now() - interval '400 hours'"))
        await session.commit()
    await Retention(live.ctx.sessions, RetentionSettings(), events_hours=168).run_once()
    newest = await _newest(live)
    async with live.connect("/v1/events?since=1") as ws:  # the default still lists them
        resync = await receive(ws)
        assert resync["reason"] == "cursor_expired"
        assert len(resync["instances"]) == 3
    async with live.connect("/v1/events?since=1&snapshot=none") as ws:
        resync = await receive(ws)
        assert resync == {"type": "resync", "reason": "cursor_expired", "seq": newest}
        last = await emit(live.ctx, 2)
        assert [e["seq"] for e in await receive_events(ws, 2)] == [last - 1, last]
    async with live.connect(f"/v1/events?since={newest + 1000}&snapshot=none") as ws:
        assert await receive(ws) == {"type": "resync", "reason": "cursor_unknown", "seq": last}


@pytest.mark.parametrize("value", ["None", "empty", "", "full,none"])
async def test_an_invalid_value_is_refused_before_the_upgrade(live: LiveServer, value: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with live.connect(f"/v1/events?snapshot={value}"):
            pass
    assert refused.value.response.status_code == 403


async def test_frame_sizes_at_two_thousand_instances(live: LiveServer) -> None:
    """Measured for docs/events.md; and a client with websockets' default limit
    (``max_size`` 1 MiB) is closed with 1009 by the full snapshot, not by none."""
    engine: AsyncEngine = live.ctx.engine
    await insert_fleet(engine, instances=FLEET, tenants=20)
    await emit(live.ctx, 1)
    sizes: dict[str, tuple[int, float]] = {}
    for mode in ("full", "none"):
        began = time.perf_counter()
        async with live.connect(f"/v1/events?snapshot={mode}", max_size=None) as ws:
            frame = await ws.recv()
        sizes[mode] = (len(frame), time.perf_counter() - began)
        message = json.loads(frame)
        assert message["type"] == "snapshot"
        assert len(message.get("instances") or []) == (FLEET if mode == "full" else 0)
    print(  # noqa: T201 (the report's figures)
        f"\nsnapshot of {FLEET}: full {sizes['full'][0]} B in {sizes['full'][1]:.3f} s, "
        f"none {sizes['none'][0]} B in {sizes['none'][1]:.3f} s"
    )
    assert sizes["full"][0] > 2**20  # over websockets' default max_size
    assert sizes["none"][0] < 100
    async with live.connect("/v1/events") as ws:  # default max_size
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.sent is not None
    assert closed.value.sent.code == 1009
    async with live.connect("/v1/events?snapshot=none") as ws:
        assert (await receive(ws))["type"] == "snapshot"
        last = await emit(live.ctx, 1)
        assert [e["seq"] for e in await receive_events(ws, 1)] == [last]

"""/v1/events against real PostgreSQL under uvicorn: order, resume, resync,
heartbeats, authentication and the shared fan-out query."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from sqlalchemy import select, text
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chroma_orch.db.models import Event
from chroma_orch.db.retention import Retention
from chroma_orch.settings import RetentionSettings
from tests.conftest import ADMIN_TOKEN
from tests.events.conftest import LiveFactory
from tests.events.live import LiveServer, emit, others_within, receive, receive_events
from tests.helpers import bearer, create_tenant


async def _all_seqs(live: LiveServer, after: int) -> list[int]:
    async with live.ctx.sessions() as session:
        rows = await session.scalars(select(Event.seq).where(Event.seq > after).order_by(Event.seq))
        return list(rows)


async def test_snapshot_first_then_every_event_in_order(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    tenant_id, token = await create_tenant(http, "acme")
    for name in ("a", "b"):
        response = await http.post("/v1/instances", json={"name": name}, headers=bearer(token))
        assert response.status_code == 202
    async with live.connect() as ws:
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot"
        assert sorted(i["name"] for i in snapshot["instances"]) == ["a", "b"]
        assert snapshot["seq"] == (await _all_seqs(live, 0))[-1]
        # 12 concurrent writers, 5 events each: one global order, no gaps, no duplicates
        writers = [emit(live.ctx, 5, tenant_id=uuid.UUID(tenant_id)) for _ in range(12)]
        await asyncio.gather(*writers)
        events = await receive_events(ws, 60)
        seqs = [e["seq"] for e in events]
        assert seqs == await _all_seqs(live, snapshot["seq"])
        assert seqs == sorted(set(seqs))
        assert all(e["event"] == "test.tick" and e["tenant_id"] == tenant_id for e in events)


async def test_resume_with_since_misses_nothing(live: LiveServer) -> None:
    async with live.connect() as ws:
        start = (await receive(ws))["seq"]
        await emit(live.ctx, 5)
        first = await receive_events(ws, 2)
    await emit(live.ctx, 5)  # while disconnected
    async with live.connect(f"/v1/events?since={first[-1]['seq']}") as ws:
        rest = await receive_events(ws, 8)
        seqs = [e["seq"] for e in first + rest]
        assert seqs == await _all_seqs(live, start)
        assert await others_within(ws, 0.6) == []  # and nothing twice


async def test_expired_and_unknown_cursors_get_resync(live: LiveServer) -> None:
    # The app's own retention pass would race the one this test runs and counts.
    await live.ctx.loops.cancel(["retention"])
    await emit(live.ctx, 10)
    async with live.ctx.sessions() as session:
        await session.execute(text("UPDATE events SET created_at = now() - interval '400 hours'"))
        await session.commit()
    retention = Retention(live.ctx.sessions, RetentionSettings(), events_hours=168)
    purged = await retention.run_once()
    assert purged["events"] == 9  # the newest event is always kept
    newest = (await _all_seqs(live, 0))[-1]
    async with live.connect("/v1/events?since=1") as ws:
        resync = await receive(ws)
        assert resync["type"] == "resync"
        assert resync["reason"] == "cursor_expired"
        assert resync["seq"] == newest
        assert resync["instances"] == []
        last = await emit(live.ctx, 1)
        assert [e["seq"] for e in await receive_events(ws, 1)] == [last]
    async with live.connect(f"/v1/events?since={newest + 1000}") as ws:
        assert (await receive(ws))["reason"] == "cursor_unknown"
    async with live.connect(f"/v1/events?since={newest - 1}") as ws:  # still retained
        assert [e["seq"] for e in await receive_events(ws, 2)] == [newest, last]


async def test_heartbeats_carry_a_resume_cursor(live_factory: LiveFactory) -> None:
    async with live_factory(heartbeat_interval=0.2) as live:
        await emit(live.ctx, 1, tenant_id=uuid.uuid4())  # another tenant's event
        async with live.connect() as ws:
            snapshot = await receive(ws)
            beat = await receive(ws, 2)
            assert beat["type"] == "heartbeat"
            assert beat["seq"] == snapshot["seq"]
            last = await emit(live.ctx, 1)
            assert (await receive_events(ws, 1))[0]["seq"] == last
            beat = await receive(ws, 2)
            assert beat == {"type": "heartbeat", "seq": last, "time": beat["time"]}


async def test_tenant_sees_only_its_own_instances(
    live: LiveServer, http: httpx.AsyncClient
) -> None:
    a_id, a_token = await create_tenant(http, "tenant-a")
    b_id, b_token = await create_tenant(http, "tenant-b")
    made = {}
    for tenant_token, name in ((a_token, "a"), (b_token, "b")):
        response = await http.post(
            "/v1/instances", json={"name": name}, headers=bearer(tenant_token)
        )
        made[name] = response.json()["instance"]["id"]
    async with (
        live.connect(token=a_token) as tenant_ws,
        live.connect(token=ADMIN_TOKEN) as admin_ws,
    ):
        snapshot = await receive(tenant_ws)
        assert [i["id"] for i in snapshot["instances"]] == [made["a"]]
        assert len((await receive(admin_ws))["instances"]) == 2
        await http.post(f"/v1/instances/{made['b']}/stop", headers=bearer(b_token))
        await http.post(f"/v1/instances/{made['a']}/stop", headers=bearer(a_token))
        mine = await receive_events(tenant_ws, 1)
        assert [(e["instance_id"], e["tenant_id"]) for e in mine] == [(made["a"], a_id)]
        assert mine[0]["event"] == "instance.desired_changed"
        assert mine[0]["after"]["desired_state"] == "stopped"
        both = await receive_events(admin_ws, 2)
        assert [e["tenant_id"] for e in both] == [b_id, a_id]
        assert await others_within(tenant_ws, 0.6) == []
    # another tenant's instance: as if it did not exist
    async with live.connect(f"/v1/events?instance_id={made['b']}", token=a_token) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4404
    async with live.connect(f"/v1/events?since=0&instance_id={made['a']}", token=a_token) as ws:
        events = await receive_events(ws, 2)
        assert {e["instance_id"] for e in events} == {made["a"]}


async def test_browser_authentication_without_headers(live: LiveServer) -> None:
    protocols = ["chroma-orch.v1", f"chroma-orch.bearer.{ADMIN_TOKEN}"]
    async with live.connect(token=None, subprotocols=protocols) as ws:
        assert ws.subprotocol == "chroma-orch.v1"  # never the token
        assert (await receive(ws))["type"] == "snapshot"
    async with live.connect(token=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": ADMIN_TOKEN}))
        assert (await receive(ws))["type"] == "snapshot"
    for token, first, code in (
        ("co_wrong", None, 4401),
        (None, {"type": "auth", "token": "co_wrong"}, 4401),
        (None, {"hello": 1}, 4400),
    ):
        async with live.connect(token=token) as ws:
            if first is not None:
                await ws.send(json.dumps(first))
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == code


async def test_one_query_per_notification_for_all_subscribers(live: LiveServer) -> None:
    async with asyncio.TaskGroup() as group:
        sockets = [await group.create_task(live.connect().__aenter__()) for _ in range(20)]
    try:
        for ws in sockets:
            await receive(ws)
        before = live.stream.fetches
        last = await emit(live.ctx, 3)
        for ws in sockets:
            assert [e["seq"] for e in await receive_events(ws, 3)][-1] == last
        assert live.stream.fetches - before <= 2
    finally:
        for ws in sockets:
            await ws.close()


async def test_invalid_parameters_are_refused_before_the_upgrade(live: LiveServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with live.connect("/v1/events?since=-1"):
            pass
    assert refused.value.response.status_code == 403

"""Liveness after start: a Chroma server whose process is alive but no longer answers
(hung; here stopped with SIGSTOP) is restarted with reason ``Unresponsive``; a server
that misses fewer heartbeats in a row than the threshold is left alone."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import text

from chroma_orch.db.session import create_engine
from tests.e2e.service import Service, chroma_processes, running_instance, running_service
from tests.helpers import wait_for


@pytest.fixture
async def live_service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    async with running_service(
        database_url,
        tmp_path / "data",
        CHROMA_ORCH_HEARTBEAT__INTERVAL="0.5",
        CHROMA_ORCH_HEARTBEAT__TIMEOUT="0.5",
        CHROMA_ORCH_HEARTBEAT__FAILURES="3",
        CHROMA_ORCH_LOCAL__STOP_GRACE="2",
    ) as service:
        yield service


async def _events(database_url: str, instance_id: str, kind: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT after FROM events WHERE type = :kind AND instance_id = :id"),
                {"kind": kind, "id": instance_id},
            )
            return [dict(r.after) for r in rows]
    finally:
        await engine.dispose()


async def test_a_hung_server_is_restarted_as_unresponsive(
    live_service: Service, database_url: str
) -> None:
    token, instance_id = await running_instance(live_service)
    (hung,) = chroma_processes(live_service.data_dir)[instance_id]
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        async with live_service.client(token) as http:

            async def restarted() -> dict[str, Any] | None:
                body: dict[str, Any] = (await http.get(f"/v1/instances/{instance_id}")).json()
                fresh = body["restart_count"] == 1 and body["phase"] == "running"
                return body if fresh else None

            again = await wait_for(restarted, timeout=60, interval=0.1)
            answer = await http.get(f"/i/{instance_id}/api/v2/heartbeat")
            assert answer.status_code == 200, answer.text
    finally:
        if psutil.pid_exists(hung.pid):
            os.kill(hung.pid, signal.SIGCONT)
    assert not psutil.pid_exists(hung.pid) or hung.status() == psutil.STATUS_ZOMBIE
    (replacement,) = chroma_processes(live_service.data_dir)[instance_id]
    assert replacement.pid != hung.pid
    assert again["failure"] is None
    crashes = await _events(database_url, instance_id, "instance.crashed")
    assert [c["reason"] for c in crashes] == ["Unresponsive"]
    assert "heartbeat" in crashes[0]["message"]


async def _misses(database_url: str, instance_id: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT heartbeat_failures FROM instances WHERE id = :id"),
                {"id": instance_id},
            )
            return int(found)
    finally:
        await engine.dispose()


async def test_a_pause_shorter_than_the_threshold_is_not_a_restart(
    live_service: Service, database_url: str
) -> None:
    token, instance_id = await running_instance(live_service)
    (server,) = chroma_processes(live_service.data_dir)[instance_id]
    os.kill(server.pid, signal.SIGSTOP)
    try:
        await wait_for(lambda: _misses(database_url, instance_id), timeout=20)  # one missed
    finally:
        os.kill(server.pid, signal.SIGCONT)

    async def answered_again() -> bool:
        return await _misses(database_url, instance_id) == 0

    await wait_for(answered_again, timeout=20)
    async with live_service.client(token) as http:
        body = (await http.get(f"/v1/instances/{instance_id}")).json()
        answer = await http.get(f"/i/{instance_id}/api/v2/heartbeat")
    assert answer.status_code == 200
    assert body["phase"] == "running"
    assert body["restart_count"] == 0
    assert chroma_processes(live_service.data_dir)[instance_id][0].pid == server.pid
    assert await _events(database_url, instance_id, "instance.crashed") == []

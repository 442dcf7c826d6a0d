"""The listener's ``heard``: whether notifications surely arrive, which a connection
that died without a close stops proving at once while ``connected`` stays set until
a ping times out. Played with the listener's backend stopped (``SIGSTOP``): it keeps
the socket open and answers nothing, as a partitioned server would."""

from __future__ import annotations

import asyncio
import os
import signal

import asyncpg

from chroma_orch.db.listener import PING_INTERVAL, PgListener, asyncpg_dsn
from tests.helpers import wait_for

_NAME = "listener-heard-test"


async def _backend_pid(database_url: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1", _NAME
        )
    finally:
        await conn.close()
    assert pid is not None
    return int(pid)


async def test_a_silent_connection_stops_being_heard_before_it_is_noticed(
    database_url: str,
) -> None:
    listener = PgListener(database_url, _NAME)
    listener.subscribe("chroma_orch_test", lambda _payload: None)
    running = asyncio.create_task(listener.run())
    within = 2 * PING_INTERVAL
    try:
        await asyncio.wait_for(listener.connected.wait(), timeout=30)
        assert listener.heard(within)
        pid = await _backend_pid(database_url)
        os.kill(pid, signal.SIGSTOP)
        try:

            async def unheard() -> bool:
                return not listener.heard(within)

            await wait_for(unheard, timeout=3 * within)
            assert listener.connected.is_set()  # not noticed yet: only heard() tells
        finally:
            os.kill(pid, signal.SIGCONT)

        async def heard_again() -> bool:
            return listener.heard(within)

        await wait_for(heard_again, timeout=30)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

"""A subscriber that stops reading never slows the others; it is told to resync
or closed with 4429, and what it did get is still in order without gaps."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.events.conftest import LiveFactory
from tests.events.live import emit, receive, receive_events
from tests.helpers import wait_for

# The server's sockets send from a small buffer (SO_SNDBUF), so what fits between the
# server's queue and the stalled reader (its queue, both sockets' buffers) is well under
# a megabyte: 4 MB in all fills it several times over, where 15 MB did with the kernel's
# own, self-growing buffers.
BATCHES = 16
PER_BATCH = 4
SIZE = 64 * 1024
SEND_BUFFER = 32 * 1024


def _tiny_buffer_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


@pytest.mark.parametrize(
    ("send_timeout", "outcome", "snapshot"),
    [(1.0, "closed 4429", "full"), (30.0, "resync", "full"), (30.0, "resync", "none")],
    ids=["closed", "resync", "resync-snapshot-none"],
)
async def test_a_reader_that_stalls_is_cut_loose(
    live_factory: LiveFactory, send_timeout: float, outcome: str, snapshot: str
) -> None:
    """Stalled for longer than ``send_timeout``: closed with 4429; shorter: when it
    reads again it gets what fitted in the buffers, then a resync, then live events
    (with ``snapshot=none`` the snapshot and the resync carry no instances)."""
    settings = {"subscriber_queue": 8, "send_timeout": send_timeout, "heartbeat_interval": 5}
    async with live_factory(send_buffer=SEND_BUFFER, **settings) as live:
        stalled_sock = _tiny_buffer_socket(live.port)
        async with (
            live.connect(
                f"/v1/events?snapshot={snapshot}", sock=stalled_sock, max_queue=1, max_size=None
            ) as stalled,
            live.connect(max_size=None) as healthy,
        ):
            start = (await receive(healthy))["seq"]
            worst = 0.0
            for _ in range(BATCHES):  # the stalled socket reads nothing meanwhile
                began = time.monotonic()
                last = await emit(live.ctx, PER_BATCH, size=SIZE)
                got = await receive_events(healthy, PER_BATCH, timeout=5)
                worst = max(worst, time.monotonic() - began)
                assert got[-1]["seq"] == last
            assert worst < 2.0  # the healthy reader was never held up

            async def stalled_reader_dropped() -> bool:
                return live.stream.subscriber_count == 1

            if outcome != "resync":  # the short send_timeout passed: the server gave up on it
                await wait_for(stalled_reader_dropped, timeout=10)
            received: list[dict[str, Any]] = []
            code = None
            try:
                while True:
                    message = await receive(stalled, 10)
                    received.append(message)
                    if message["type"] in ("resync", "heartbeat"):
                        break
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            assert received[0]["type"] == "snapshot"
            assert ("instances" in received[0]) == (snapshot == "full")
            seqs = [m["seq"] for m in received[1:] if m["type"] == "event"]
            assert seqs == list(range(start + 1, start + 1 + len(seqs)))  # a gapless prefix
            assert len(seqs) < BATCHES * PER_BATCH
            if outcome == "resync":
                resync = received[-1]
                assert resync["type"] == "resync"
                assert resync["reason"] == "slow_consumer"
                assert resync["seq"] >= last
                assert ("instances" in resync) == (snapshot == "full")
                newest = await emit(live.ctx, 1)
                assert [e["seq"] for e in await receive_events(stalled, 1)] == [newest]
            else:
                assert code == 4429

        async def unsubscribed() -> bool:
            return live.stream.subscriber_count == 0

        await wait_for(unsubscribed, timeout=5)

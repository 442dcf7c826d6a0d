"""/v1/instances/{id}/logs/stream follows the server's output (local runtime: its
log file), starting with the last N lines, under the same token rules."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.events.live import LiveServer, receive
from tests.helpers import bearer, create_tenant


async def test_log_stream_tails_then_follows(live: LiveServer, http: httpx.AsyncClient) -> None:
    _, token = await create_tenant(http, "acme")
    _, other = await create_tenant(http, "other")
    created = await http.post("/v1/instances", json={"name": "main"}, headers=bearer(token))
    instance_id = created.json()["instance"]["id"]
    log_file = live.ctx.settings.data_dir / "logs" / f"{instance_id}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("".join(f"old {n}\n" for n in range(10)))
    path = f"/v1/instances/{instance_id}/logs/stream?tail=3"
    async with live.connect(path, token=token) as ws:
        first = await receive(ws)
        assert first == {"type": "log", "lines": ["old 7", "old 8", "old 9"]}
        with log_file.open("a") as out:
            out.write("new 1\nnew 2\n")
        assert (await receive(ws))["lines"] == ["new 1", "new 2"]
    for token_, code in ((other, 4404), ("co_nope", 4401)):
        async with live.connect(path, token=token_) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == code

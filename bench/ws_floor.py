"""The floor under ``bench/ws_fanout.py``: a bare broadcast server on the same library.

``python bench/ws_floor.py PORT`` serves WebSockets with the ``websockets``
package (the library uvicorn runs the service's WebSockets on), as its own
process like the service. A subscriber connects to ``/?tenant=<id>`` (or ``/``
for everything); the publisher connects to ``/publish`` and sends
``<tenant id> <frame>`` text messages. For each one the server sends ``frame``
unchanged, with ``websockets.broadcast``, to every subscriber of that tenant and
to every subscriber of everything: no authentication, no database, no
serialisation, no per-subscriber queue: what fanning one frame out to these
sockets costs at the least.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.server import ServerConnection, serve

EVERYTHING = ""


class Broadcast:
    def __init__(self) -> None:
        self.subscribers: dict[str, set[ServerConnection]] = defaultdict(set)

    async def handle(self, ws: ServerConnection) -> None:
        target = urlsplit(ws.request.path if ws.request else "/")
        if target.path == "/publish":
            async for message in ws:
                tenant, frame = str(message).split(" ", 1)
                subscribers = self.subscribers[tenant], self.subscribers[EVERYTHING]
                websockets.broadcast(itertools.chain(*subscribers), frame)
            return
        tenant = parse_qs(target.query).get("tenant", [EVERYTHING])[0]
        self.subscribers[tenant].add(ws)
        try:
            await ws.wait_closed()
        finally:
            self.subscribers[tenant].discard(ws)


async def main(port: int) -> None:
    async with serve(Broadcast().handle, "127.0.0.1", port) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

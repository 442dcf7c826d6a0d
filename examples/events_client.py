# ruff: noqa: T201  (a command-line example: it prints what it sees)
"""Follow chroma-orch's event stream and keep a live table of instances,
resuming after any disconnect without missing an event.

    pip install websockets
    CHROMA_ORCH_TOKEN=co_... python examples/events_client.py [ws://127.0.0.1:8080]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import websockets

CLOSE_UNAUTHORIZED = 4401


class InstanceTable:
    """Local state: a snapshot (or resync) replaces it, events patch it."""

    def __init__(self) -> None:
        self.seq: int | None = None  # resume cursor
        self.instances: dict[str, dict[str, Any]] = {}

    def handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in ("snapshot", "resync"):
            self.instances = {i["id"]: i for i in message["instances"]}
            self.seq = message["seq"]
            print(f"{kind}: {len(self.instances)} instances at seq {self.seq}")
        elif kind == "event":
            self.apply(message)
            self.seq = message["seq"]
        elif kind == "heartbeat" and message["seq"] is not None:
            self.seq = max(self.seq or 0, message["seq"])

    def apply(self, event: dict[str, Any]) -> None:
        after = event["after"] or {}
        instance = self.instances.setdefault(event["instance_id"], {"id": event["instance_id"]})
        instance.update(after)
        print(f"#{event['seq']} {event['event']} {instance.get('name', '?')} {after}")
        if instance.get("phase") == "deleted":
            del self.instances[event["instance_id"]]


async def follow(base: str, token: str) -> None:
    table = InstanceTable()
    delay = 0.5
    while True:
        url = f"{base}/v1/events" + (f"?since={table.seq}" if table.seq is not None else "")
        try:
            # it keeps every instance, so it takes the full snapshot: beyond ~1,400
            # instances that is more than websockets' default max_size (1 MiB: close
            # 1009). A client that keeps less connects with ?snapshot=none instead.
            async with websockets.connect(
                url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None
            ) as ws:
                delay = 0.5
                async for raw in ws:
                    table.handle(json.loads(raw))
        except websockets.ConnectionClosed as closed:
            if closed.rcvd is not None and closed.rcvd.code == CLOSE_UNAUTHORIZED:
                raise SystemExit(f"token refused: {closed.rcvd.reason}") from closed
            print(f"disconnected ({closed}); resuming from seq {table.seq}")
        except OSError as exc:
            print(f"cannot connect ({exc}); retrying in {delay:.1f}s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


if __name__ == "__main__":
    server = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8080"
    asyncio.run(follow(server.rstrip("/"), os.environ["CHROMA_ORCH_TOKEN"]))

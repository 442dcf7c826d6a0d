"""Hostile WebSocket handshakes and first frames against the live service.

A fixed seed drives a few hundred handshakes to /v1/events and the live-log
socket with odd query strings, subprotocols, Authorization headers and first
frames. Every answer must be a refusal below 500 or a session that ends with
one of the documented close codes; the service must keep serving and log no
unhandled error; no token may show up in its log.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tests.conftest import ADMIN_TOKEN
from tests.e2e.service import Service
from tests.helpers import create_tenant

SEED = 20261126
CASES = 160
DOCUMENTED_CLOSES = {1000, 1001, 4400, 4401, 4404, 4429}
ODD_TEXT = ["", " ", "-1", "0", "1e309", "9" * 40, "%00", "../..", "\u202e", "null", "[]", "'"]


def _query(rng: random.Random, instance_id: str) -> str:
    parts = []
    if rng.random() < 0.6:
        parts.append(f"since={rng.choice([*ODD_TEXT, str(rng.randint(-5, 10**6))])}")
    if rng.random() < 0.4:
        value = rng.choice([instance_id, str(uuid.uuid4()), *ODD_TEXT])
        parts.append(f"instance_id={value}")
    if rng.random() < 0.2:
        parts.append(f"{rng.choice(ODD_TEXT)}={rng.choice(ODD_TEXT)}")
    return "&".join(parts)


def _credentials(rng: random.Random, token: str) -> tuple[dict[str, str], list[str]]:
    headers: dict[str, str] = {}
    protocols: list[str] = []
    choice = rng.randrange(5)
    if choice == 0:
        headers["Authorization"] = rng.choice([f"Bearer {token}", "Bearer x", "Basic eDp5", ""])
    elif choice == 1:
        protocols = ["chroma-orch.v1", f"chroma-orch.bearer.{rng.choice([token, 'x', '-'])}"]
    elif choice == 2:
        protocols = [rng.choice(["chroma-orch.v1", "x", "chroma-orch.bearer."])]
    return headers, protocols


def _first_frame(rng: random.Random, token: str) -> str | bytes | None:
    return rng.choice(
        [
            None,
            json.dumps({"type": "auth", "token": token}),
            json.dumps({"type": "auth", "token": 5}),
            json.dumps({"type": "auth"}),
            json.dumps([1, 2]),
            "not json",
            b"\x00\xff" * 8,
            "{" * 1000,
        ]
    )


async def _one(url: str, rng: random.Random, token: str) -> str | None:
    """Run one case; return a description of what is wrong, or None."""
    headers, protocols = _credentials(rng, token)
    frame = _first_frame(rng, token)
    kwargs: dict[str, Any] = {"additional_headers": headers, "open_timeout": 5}
    if protocols:
        kwargs["subprotocols"] = protocols
    try:
        async with connect(url, **kwargs) as ws:
            if frame is not None:
                await ws.send(frame)
            try:
                async with asyncio.timeout(1.0):
                    async for _ in ws:
                        pass
            except TimeoutError:
                return None  # a live, authorised stream: fine
            code = ws.close_code
    except InvalidStatus as exc:
        status = exc.response.status_code
        return None if status < 500 else f"{url}: handshake answered {status}"
    except ConnectionClosed as exc:  # the server closed while we were still sending
        code = exc.rcvd.code if exc.rcvd is not None else None
    except (InvalidHandshake, OSError) as exc:
        return f"{url}: {type(exc).__name__}: {exc}"
    if code not in DOCUMENTED_CLOSES:
        return f"{url}: ended with close code {code} (None: no close frame)"
    return None


async def test_fuzzed_websocket_handshakes(service: Service) -> None:
    async with service.client() as admin:
        _, token = await create_tenant(admin, "acme")
    async with service.client(token) as http:
        created = await http.post("/v1/instances", json={"name": "main"})
        instance_id = created.json()["instance"]["id"]
    rng = random.Random(SEED)
    base = service.url.replace("http://", "ws://")
    problems = []
    for _ in range(CASES):
        path = rng.choice(["/v1/events", f"/v1/instances/{instance_id}/logs/stream"])
        query = _query(rng, instance_id)
        problem = await _one(f"{base}{path}{'?' + query if query else ''}", rng, token)
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems[:20])
    async with service.client() as admin:
        assert (await admin.get("/healthz")).status_code == 200
    log = service.log_path.read_text()
    assert "Exception in ASGI application" not in log
    assert "unhandled error" not in log
    assert token not in log
    assert ADMIN_TOKEN not in log

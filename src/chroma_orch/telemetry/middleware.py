"""ASGI middleware: a request id for every request, and HTTP metrics."""

from __future__ import annotations

import itertools
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chroma_orch.telemetry import metrics
from chroma_orch.telemetry.context import bind

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PROCESS_PREFIX = uuid.uuid4().hex[:16]
_SEQUENCE = itertools.count(1)


def _new_request_id() -> str:
    """Unique without a system call per request: this process's random prefix and a
    counter (32 hex characters, like a UUID's)."""
    return f"{_PROCESS_PREFIX}{next(_SEQUENCE):016x}"


class RequestContextMiddleware:
    """Takes a sane ``X-Request-ID`` or makes one, binds it to the log context
    and echoes it in the response; counts requests by route and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_ID.match(incoming) else _new_request_id()
        status = {"code": 500}
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        with bind(request_id=request_id):
            try:
                # A WebSocket's frames go straight out: wrapping every frame of every
                # subscriber cost the fan-out a coroutine per frame, for headers that
                # only an HTTP response has.
                await self.app(scope, receive, send_with_id if scope["type"] == "http" else send)
            finally:
                if scope["type"] == "http":
                    route = scope.get("route")
                    path = getattr(route, "path", "unmatched")
                    metrics.observe_request(
                        scope["method"], path, status["code"], time.perf_counter() - started
                    )

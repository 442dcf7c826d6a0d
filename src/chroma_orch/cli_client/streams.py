"""The service's WebSockets, used when it offers them: ``/v1/events`` to wait for
a phase (of an instance or of one of its snapshots), ``/v1/instances/{id}/logs/stream``
to follow logs (see docs/events.md).

Every function returns ``None`` when the socket cannot be opened (an older
service, a proxy without WebSocket support): the caller then polls instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from chroma_orch.cli_client.api import Api
from chroma_orch.cli_client.exits import AUTH, NOT_FOUND, UNREACHABLE, USAGE, CliError

SUBPROTOCOL = "chroma-orch.v1"
_CLOSE_CODES = {4400: USAGE, 4401: AUTH, 4404: NOT_FOUND}

Settled = Callable[[dict[str, Any]], bool]
"""True once the instance is where the caller wants it; raises to give up."""
Remaining = Callable[[], float]
"""Seconds left; raises when none are."""


def _open(api: Api, path: str) -> ClientConnection | None:
    if not api.streams:
        return None
    url = "ws" + api.url.removeprefix("http") + path
    try:
        return connect(
            url,
            additional_headers={"Authorization": f"Bearer {api.token}"},
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            open_timeout=5,
            proxy=None,
        )
    except (InvalidHandshake, OSError, TimeoutError):
        return None


def _closed(exc: ConnectionClosed) -> CliError:
    code = exc.rcvd.code if exc.rcvd is not None else 1006
    reason = exc.rcvd.reason if exc.rcvd is not None else "connection lost"
    return CliError(_CLOSE_CODES.get(code, UNREACHABLE), f"stream closed: {reason} ({code})")


def wait(
    api: Api, instance_id: str, settled: Settled, remaining: Remaining
) -> dict[str, Any] | None:
    """Re-read the instance on every event about it until ``settled`` says so.

    ``None``: the stream is not available, or dropped; poll for the rest."""
    return watch(
        api, instance_id, lambda: api.get(f"/v1/instances/{instance_id}"), settled, remaining
    )


def watch(
    api: Api,
    instance_id: str | None,
    read: Callable[[], dict[str, Any]],
    settled: Settled,
    remaining: Remaining,
) -> dict[str, Any] | None:
    """Call ``read`` (the instance, or one of its snapshots) again on every event
    about the instance (None: on every event the token sees, e.g. an admin's
    ``rollout.*``) until ``settled`` says so.

    ``None``: the stream is not available, or dropped; poll for the rest."""
    # snapshot=none: the snapshot only marks the start (``read`` fetches the state), and a
    # whole fleet's list would not fit a frame of websockets' default 1 MiB (close 1009).
    # A service from before it ignores the parameter.
    query = "?snapshot=none" + (f"&instance_id={instance_id}" if instance_id is not None else "")
    ws = _open(api, f"/v1/events{query}")
    if ws is None:
        return None
    with ws:
        # subscribed: nothing that happens from now on can be missed
        current = read()
        while not settled(current):
            try:
                message = json.loads(ws.recv(timeout=remaining()))
            except TimeoutError:
                continue  # remaining() raises once the time is up
            except ConnectionClosed:
                return None
            if message.get("type") in ("event", "snapshot", "resync"):
                current = read()
        return current


def follow_logs(api: Api, instance_id: str, tail: int, emit: Callable[[str], None]) -> bool:
    """Print the last ``tail`` lines, then new ones until the output ends.

    False: the stream is not available; nothing was printed."""
    ws = _open(api, f"/v1/instances/{instance_id}/logs/stream?tail={tail}")
    if ws is None:
        return False
    with ws:
        while True:
            try:
                message = json.loads(ws.recv())
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == 1000:
                    return True
                raise _closed(exc) from exc
            if message.get("type") == "log":
                for line in message["lines"]:
                    emit(line)
            elif message.get("type") == "log_end":
                return True

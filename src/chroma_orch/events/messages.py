"""The WebSocket protocol: every frame is one JSON object with a ``type``.

Server to client on ``/v1/events``: ``snapshot`` (first, unless resuming with
``since``), then ``event`` frames in ``seq`` order with no gaps and no
duplicates, ``heartbeat`` frames while idle, and ``resync`` (a fresh snapshot)
when the cursor expired or the client fell too far behind. Client to server:
optionally ``auth`` as the first frame. ``/v1/instances/{id}/logs/stream``
sends ``log`` frames, ``heartbeat`` frames and a final ``log_end``.
Errors end the socket with one of the ``CLOSE_*`` codes below.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from chroma_orch.domain.schemas import InstanceRead

SUBPROTOCOL = "chroma-orch.v1"
"""Offer this subprotocol (browsers: with ``chroma-orch.bearer.<token>``); it is echoed."""
BEARER_SUBPROTOCOL_PREFIX = "chroma-orch.bearer."

CLOSE_BAD_REQUEST = 4400
"""A malformed auth frame or parameter."""
CLOSE_UNAUTHORIZED = 4401
"""Missing, invalid, expired or late token; or, on an open socket, the token was
revoked, deleted, re-scoped or expired."""
CLOSE_NOT_FOUND = 4404
"""The instance does not exist or is not visible to the token."""
CLOSE_SLOW_CONSUMER = 4429
"""The client stopped reading; reconnect with ``since`` = the last ``seq`` it handled."""
CLOSE_TRY_AGAIN_LATER = 1013
"""The token already holds ``max_sockets_per_token`` sockets on this replica."""


class Message(BaseModel):
    def frame(self) -> str:
        return self.model_dump_json()


class EventMessage(Message):
    """One row of the event log: what changed, for which instance."""

    type: Literal["event"] = "event"
    seq: int = Field(description="Position in the log; resume with since=<seq>.")
    event: str = Field(
        description="instance.created, instance.desired_changed, instance.phase_changed, "
        "instance.status_changed, instance.crashed, instance.failed, ...",
        examples=["instance.phase_changed"],
    )
    instance_id: uuid.UUID | None
    tenant_id: uuid.UUID | None
    before: dict[str, Any] | None = Field(description="The changed fields before, if any.")
    after: dict[str, Any] | None = Field(description="The changed fields after.")
    created_at: datetime


SnapshotMode = Literal["full", "none"]
"""``/v1/events?snapshot=``: ``full`` (the default) sends every visible instance in
``snapshot`` and ``resync``; ``none`` sends only their ``seq`` (and ``reason``), and
the client reads the instances it wants from ``GET /v1/instances``."""


_INSTANCES = "Every visible instance; absent with snapshot=none."


class _StateMessage(Message):
    """``snapshot`` and ``resync``: with snapshot=none ``instances`` is left out of
    the frame (not sent as null)."""

    def frame(self) -> str:
        exclude = {"instances"} if getattr(self, "instances", None) is None else None
        return self.model_dump_json(exclude=exclude)


class SnapshotMessage(_StateMessage):
    """Every instance the caller may see (not deleted), as of ``seq``."""

    type: Literal["snapshot"] = "snapshot"
    seq: int = Field(description="The snapshot includes every event up to this one.")
    instances: list[InstanceRead] | None = Field(default=None, description=_INSTANCES)


class ResyncMessage(_StateMessage):
    """Replace all local state with this snapshot, then continue from ``seq``."""

    type: Literal["resync"] = "resync"
    reason: Literal["cursor_expired", "cursor_unknown", "slow_consumer"]
    seq: int
    instances: list[InstanceRead] | None = Field(default=None, description=_INSTANCES)


class HeartbeatMessage(Message):
    """The link is alive. On /v1/events, ``seq`` is a safe resume cursor: every
    event up to it was sent, or is not visible to this subscriber."""

    type: Literal["heartbeat"] = "heartbeat"
    seq: int | None = None
    time: datetime


class LogMessage(Message):
    """Lines of the instance's server output, oldest first."""

    type: Literal["log"] = "log"
    lines: list[str]


class LogEndMessage(Message):
    """The server's output ended (it is gone for good)."""

    type: Literal["log_end"] = "log_end"


class AuthMessage(BaseModel):
    """Client to server, first frame, when neither the header nor the subprotocol
    carried a token."""

    type: Literal["auth"]
    token: Annotated[str, Field(min_length=1, max_length=256)]


ServerMessage = Annotated[
    EventMessage | SnapshotMessage | ResyncMessage | HeartbeatMessage | LogMessage | LogEndMessage,
    Field(discriminator="type"),
]

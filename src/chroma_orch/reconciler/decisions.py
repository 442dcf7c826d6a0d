"""What one reconcile pass decided, as a small typed result the loop acts on.

- ``Done``: converged for now; nothing is due until a request or an observation
  changes something (``released``: the pass's last write already gave the lease back).
- ``RequeueAfter``: look again in ``seconds`` (a start in progress, a backoff, a port
  still in quarantine, a drain).
- ``Failed``: terminal for this generation; the instance shows ``failed`` and waits
  for a new request. Its write gave the lease back.

The pass's status writes themselves are the named operations of
``chroma_orch.db.instance_writes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class Done:
    released: bool = False


@dataclass(frozen=True)
class RequeueAfter:
    seconds: float


@dataclass(frozen=True)
class Failed:
    reason: str


Decision = Done | RequeueAfter | Failed


class LeaseLostError(Exception):
    """Another replica owns the instance now; stop working on it."""


def released(decision: Decision) -> bool:
    """Whether the pass's last write gave the lease back (else the loop does)."""
    return isinstance(decision, Failed) or (isinstance(decision, Done) and decision.released)


def requeue_time(decision: Decision) -> datetime | None:
    """When the instance is due again (None: not until something changes)."""
    if isinstance(decision, RequeueAfter):
        return datetime.now(UTC) + timedelta(seconds=decision.seconds)
    return None

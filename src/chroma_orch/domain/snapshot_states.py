"""The snapshot state model: kinds, phases and every allowed phase change.

The API writes a snapshot ``pending`` (or ``deleting``); only the reconciler moves it
on, under its instance's lease: ``pending → running → ready | failed``. A crash
while ``running`` leaves it so, and the next pass on the instance starts it over.
"""

from __future__ import annotations

from chroma_orch.db.models import OPEN_SNAPSHOT, SnapshotKind, SnapshotPhase
from chroma_orch.errors import InvalidTransitionError

__all__ = ["OPEN_SNAPSHOT", "SnapshotKind", "SnapshotPhase", "check_snapshot_phase"]

_S = SnapshotPhase
TRANSITIONS: dict[SnapshotPhase, frozenset[SnapshotPhase]] = {
    _S.PENDING: frozenset({_S.RUNNING, _S.FAILED, _S.DELETING}),
    _S.RUNNING: frozenset({_S.READY, _S.FAILED, _S.DELETING}),
    _S.READY: frozenset({_S.DELETING}),
    _S.FAILED: frozenset({_S.DELETING}),
    _S.DELETING: frozenset(),
}
"""Phase changes; staying in a phase is always allowed (a retried step)."""


def check_snapshot_phase(current: SnapshotPhase, new: SnapshotPhase) -> None:
    """Raise ``InvalidTransitionError`` for a change the model forbids."""
    if new is not current and new not in TRANSITIONS[current]:
        raise InvalidTransitionError(f"snapshot phase {current.value} cannot become {new.value}")

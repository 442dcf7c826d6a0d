"""The instance state model: every allowed transition lives here, in one table.

``desired_state`` is written by the API (actions), ``phase`` only by the
reconciler. Both go through this module so neither can invent a transition.
"""

from __future__ import annotations

import enum

from chroma_orch.errors import InvalidTransitionError


class DesiredState(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    DELETED = "deleted"


class Phase(enum.StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    DELETED = "deleted"


class Action(enum.StrEnum):
    CREATE = "create"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    DELETE = "delete"
    RESTORE = "restore"
    UNDELETE = "undelete"
    UPGRADE = "upgrade"
    """A guarded upgrade (``POST /v1/instances/{id}/upgrade``): the reconciler restarts
    the server on the new version once it has the parity probe's baseline."""
    RECONFIGURE = "reconfigure"
    """A new spec (``PATCH /v1/instances/{id}``): a restart on it when running, applied
    at the next start when stopped. The desired state stays as it is."""


_P = Phase

PHASE_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    _P.PENDING: frozenset({_P.STARTING, _P.STOPPING, _P.STOPPED, _P.FAILED, _P.DELETED}),
    _P.STARTING: frozenset({_P.RUNNING, _P.STOPPING, _P.STOPPED, _P.FAILED, _P.DELETED}),
    _P.RUNNING: frozenset({_P.STARTING, _P.STOPPING, _P.STOPPED, _P.FAILED, _P.DELETED}),
    _P.STOPPING: frozenset({_P.STARTING, _P.STOPPED, _P.FAILED, _P.DELETED}),
    _P.STOPPED: frozenset({_P.STARTING, _P.STOPPING, _P.DELETED}),
    _P.FAILED: frozenset({_P.STARTING, _P.STOPPING, _P.STOPPED, _P.DELETED}),
    # the way out is an undelete: its data loaded, then started (or failed to load)
    _P.DELETED: frozenset({_P.STARTING, _P.FAILED}),
}
"""Observed phase changes the reconciler may make; staying in a phase is always allowed."""

_D = DesiredState

ACTION_TARGETS: dict[Action, DesiredState] = {
    Action.CREATE: _D.RUNNING,
    Action.START: _D.RUNNING,
    Action.STOP: _D.STOPPED,
    Action.RESTART: _D.RUNNING,
    Action.DELETE: _D.DELETED,
    Action.RESTORE: _D.RUNNING,
    Action.UNDELETE: _D.RUNNING,
    Action.UPGRADE: _D.RUNNING,
}

# Which actions are allowed, by the instance's current desired state and phase.
# Restart needs a server that should be running; nothing but a repeated delete or
# an undelete may touch a deleted instance (an undelete only once it is deleted).
_ACTIONS_BY_DESIRED: dict[DesiredState, frozenset[Action]] = {
    _D.RUNNING: frozenset(
        {
            Action.START,
            Action.STOP,
            Action.RESTART,
            Action.DELETE,
            Action.RESTORE,
            Action.RECONFIGURE,
            Action.UPGRADE,
        }
    ),  # fmt: skip
    _D.STOPPED: frozenset(
        {Action.START, Action.STOP, Action.DELETE, Action.RESTORE, Action.RECONFIGURE}
    ),
    _D.DELETED: frozenset({Action.DELETE, Action.UNDELETE}),
}


def check_action(action: Action, desired: DesiredState, phase: Phase) -> None:
    """Raise ``InvalidTransitionError`` when ``action`` is not allowed now."""
    allowed = action is Action.CREATE or action in _ACTIONS_BY_DESIRED[desired]
    if allowed and not (action is Action.UNDELETE and phase is not Phase.DELETED):
        return
    raise InvalidTransitionError(
        f"cannot {action.value} an instance whose desired state is {desired.value} "
        f"(phase {phase.value})"
    )


def check_phase(current: Phase, new: Phase) -> None:
    """Raise ``InvalidTransitionError`` when the reconciler would make a forbidden change."""
    if new is not current and new not in PHASE_TRANSITIONS[current]:
        raise InvalidTransitionError(f"phase {current.value} cannot become {new.value}")


def changes_desired(action: Action, desired: DesiredState, phase: Phase) -> bool:
    """Whether ``action`` is a new request (bumps the generation) or a repeat of one.

    Starting a failed instance is a new request (a retry); restart, restore and
    undelete always are.
    """
    if action in (Action.RESTART, Action.RESTORE, Action.UNDELETE, Action.UPGRADE):
        return True
    if action is Action.START and phase is Phase.FAILED:
        return True
    return ACTION_TARGETS[action] is not desired

import pytest

from chroma_orch.domain.states import (
    PHASE_TRANSITIONS,
    Action,
    DesiredState,
    Phase,
    changes_desired,
    check_action,
    check_phase,
)
from chroma_orch.errors import InvalidTransitionError


def test_every_phase_has_a_row_and_deleted_is_left_only_by_an_undelete() -> None:
    assert set(PHASE_TRANSITIONS) == set(Phase)
    # an undelete loads the data, then starts (or fails to load): nothing else
    assert PHASE_TRANSITIONS[Phase.DELETED] == frozenset({Phase.STARTING, Phase.FAILED})
    for phase in Phase:
        if phase is not Phase.DELETED:
            assert Phase.DELETED in PHASE_TRANSITIONS[phase], phase


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (Phase.PENDING, Phase.STARTING),
        (Phase.STARTING, Phase.RUNNING),
        (Phase.RUNNING, Phase.STOPPING),
        (Phase.STOPPING, Phase.STOPPED),
        (Phase.STOPPED, Phase.STARTING),
        (Phase.FAILED, Phase.STARTING),
        (Phase.RUNNING, Phase.RUNNING),
        (Phase.DELETED, Phase.STARTING),
    ],
)
def test_allowed_phase_changes(current: Phase, new: Phase) -> None:
    check_phase(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (Phase.DELETED, Phase.RUNNING),
        (Phase.DELETED, Phase.STOPPED),
        (Phase.STOPPED, Phase.RUNNING),
        (Phase.PENDING, Phase.RUNNING),
        (Phase.STOPPED, Phase.FAILED),
    ],
)
def test_forbidden_phase_changes(current: Phase, new: Phase) -> None:
    with pytest.raises(InvalidTransitionError):
        check_phase(current, new)


def test_restart_needs_a_running_desire() -> None:
    check_action(Action.RESTART, DesiredState.RUNNING, Phase.RUNNING)
    with pytest.raises(InvalidTransitionError):
        check_action(Action.RESTART, DesiredState.STOPPED, Phase.STOPPED)


@pytest.mark.parametrize(
    "action", [Action.START, Action.STOP, Action.RESTART, Action.RESTORE, Action.UNDELETE]
)
def test_only_delete_touches_a_deleting_instance(action: Action) -> None:
    with pytest.raises(InvalidTransitionError):
        check_action(action, DesiredState.DELETED, Phase.STOPPING)
    check_action(Action.DELETE, DesiredState.DELETED, Phase.STOPPING)


@pytest.mark.parametrize("action", [Action.START, Action.STOP, Action.RESTART, Action.RESTORE])
def test_a_deleted_instance_is_undeleted_or_deleted_again_only(action: Action) -> None:
    check_action(Action.UNDELETE, DesiredState.DELETED, Phase.DELETED)
    check_action(Action.DELETE, DesiredState.DELETED, Phase.DELETED)
    assert changes_desired(Action.UNDELETE, DesiredState.DELETED, Phase.DELETED)
    with pytest.raises(InvalidTransitionError):
        check_action(action, DesiredState.DELETED, Phase.DELETED)


def test_a_live_instance_cannot_be_undeleted() -> None:
    for desired in (DesiredState.RUNNING, DesiredState.STOPPED):
        with pytest.raises(InvalidTransitionError):
            check_action(Action.UNDELETE, desired, Phase.RUNNING)


def test_repeats_do_not_bump_the_generation_but_retries_do() -> None:
    assert not changes_desired(Action.STOP, DesiredState.STOPPED, Phase.STOPPED)
    assert not changes_desired(Action.START, DesiredState.RUNNING, Phase.RUNNING)
    assert changes_desired(Action.START, DesiredState.RUNNING, Phase.FAILED)
    assert changes_desired(Action.RESTART, DesiredState.RUNNING, Phase.RUNNING)
    assert changes_desired(Action.STOP, DesiredState.RUNNING, Phase.RUNNING)

"""EventHub: which waiters an events notification wakes."""

from __future__ import annotations

from chroma_orch.db.hub import EventHub


def test_waiters_wake_for_their_instance_and_phases_only() -> None:
    hub = EventHub()
    with (
        hub.watch("a", {"running", "failed"}) as a_running,
        hub.watch("a") as a_anything,
        hub.watch("b", {"running"}) as b_running,
    ):
        hub.notify("5 a=starting")
        assert a_anything.is_set()
        assert not a_running.is_set()
        assert not b_running.is_set()
        hub.notify("6 a=running b=starting")
        assert a_running.is_set()
        assert not b_running.is_set()
        hub.notify("7 b")  # an event that names no phase (a new request, say)
        assert b_running.is_set()
        assert hub.latest_seq == 7


def test_a_notification_without_ids_wakes_everyone() -> None:
    hub = EventHub()
    with hub.watch("a", {"running"}) as a, hub.watch("b") as b:
        hub.notify("")  # what the listener hands over after reconnecting
        assert a.is_set()
        assert b.is_set()
    assert hub.latest_seq == 0

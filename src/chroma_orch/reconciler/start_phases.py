"""Recording how far a start got: the start phases an observation reports that the
instance has not recorded yet, their events, and the per-phase histogram.

A phase is recorded once per start attempt, at the time the runtime says it was
reached (ECS task timestamps, a local process's start time) or, where it cannot
tell, when the reconciler first saw it. Phases a runtime skipped or could not see
stay unrecorded: nothing is filled in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chroma_orch.db.models import Instance
from chroma_orch.runtimes.base import Observation, StartPhase
from chroma_orch.telemetry.metrics import START_PHASE_SECONDS

EVENT = "instance.start_phase"


def reached(observation: Observation | None) -> dict[StartPhase, datetime | None]:
    """The phases ``observation`` says were reached, with when (None: not told)."""
    if observation is None:
        return {}
    found: dict[StartPhase, datetime | None] = dict(observation.phase_times)
    if observation.phase is not None:
        found.setdefault(observation.phase, None)
    return found


def unrecorded(recorded: Mapping[str, Any] | None, observation: Observation | None) -> bool:
    """Whether ``observation`` reports a start phase not among ``recorded`` (an
    instance's ``start_phases``)."""
    recorded = recorded or {}
    return any(phase.value not in recorded for phase in reached(observation))


def new_phases(inst: Instance, observation: Observation | None) -> dict[StartPhase, datetime]:
    """The phases to record now, in order, each with its time."""
    recorded = inst.start_phases or {}
    now = datetime.now(UTC)
    found = reached(observation)
    return {
        phase: found[phase] or now
        for phase in sorted(found, key=lambda phase: phase.rank)
        if phase.value not in recorded
    }


def merged(inst: Instance, phases: dict[StartPhase, datetime]) -> dict[str, str]:
    """The instance's ``start_phases`` column with ``phases`` added."""
    return {**(inst.start_phases or {}), **{p.value: at.isoformat() for p, at in phases.items()}}


def since_start(started: datetime, at: datetime) -> float:
    """Seconds from ``started``, the start attempt's beginning (when the reconciler
    wrote "starting", the instance's ``phase_changed_at`` while it starts)."""
    return max((at - started).total_seconds(), 0.0)


def events(
    started: datetime, phases: dict[StartPhase, datetime]
) -> list[tuple[str, dict[str, Any]]]:
    """One ``instance.start_phase`` event per phase: which, when, and how long after
    the start attempt began."""
    return [
        (
            EVENT,
            {"start_phase": p.value, "at": at.isoformat(), "seconds": since_start(started, at)},
        )
        for p, at in phases.items()
    ]


def observe(runtime: str, started: datetime, phases: dict[StartPhase, datetime]) -> None:
    """Count the recorded phases in the per-phase histogram."""
    for phase, at in phases.items():
        START_PHASE_SECONDS.labels(runtime, phase.value).observe(since_start(started, at))

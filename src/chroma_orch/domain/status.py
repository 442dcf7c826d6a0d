"""An instance's status as its events record it before and after a change, and
the parts the API shows (``domain/instances.py``): one definition of both."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chroma_orch.db.models import Instance
from chroma_orch.runtimes.base import StartPhase


def endpoint_of(inst: Instance) -> tuple[str, int] | None:
    """Where the instance's server listens, once it has an address."""
    if inst.endpoint_host and inst.endpoint_port:
        return inst.endpoint_host, inst.endpoint_port
    return None


def failure_of(inst: Instance) -> tuple[str, str] | None:
    """Why the instance failed (reason, message), if it did."""
    if inst.failure_reason:
        return inst.failure_reason, inst.failure_message or ""
    return None


def start_phases_of(inst: Instance) -> dict[StartPhase, datetime]:
    """The start phases the instance's latest start reached, in order, with when."""
    recorded = inst.start_phases or {}
    return {
        phase: datetime.fromisoformat(recorded[phase.value])
        for phase in StartPhase
        if phase.value in recorded
    }


def start_phase_of(inst: Instance) -> StartPhase | None:
    """How far the instance's latest start got (the furthest phase it reached)."""
    phases = start_phases_of(inst)
    return max(phases, key=lambda phase: phase.rank) if phases else None


def status_view(inst: Instance) -> dict[str, Any]:
    """The instance's status in its events' ``before`` and ``after``."""
    endpoint, failure = endpoint_of(inst), failure_of(inst)
    return {
        "phase": inst.phase,
        "endpoint": None if endpoint is None else {"host": endpoint[0], "port": endpoint[1]},
        "failure": None
        if failure is None
        else {"reason": failure[0], "message": inst.failure_message},
        "observed_generation": inst.observed_generation,
    }

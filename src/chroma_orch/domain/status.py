"""An instance's status as its events record it before and after a change, and
the parts the API shows (``domain/instances.py``): one definition of both."""

from __future__ import annotations

from typing import Any

from chroma_orch.db.models import Instance


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

"""What an instance's status events record before and after a change.

One definition, written twice: in Python for the reconciler's writes, and in SQL for
the claim, which records "starting" for the instances it hands out to be started in
the same statement. ``tests/reconciler/test_reconciler.py`` checks that they agree.
"""

from __future__ import annotations

from typing import Any

from chroma_orch.db.models import Instance


def status_view(inst: Instance) -> dict[str, Any]:
    endpoint = None
    if inst.endpoint_host and inst.endpoint_port:
        endpoint = {"host": inst.endpoint_host, "port": inst.endpoint_port}
    failure = None
    if inst.failure_reason:
        failure = {"reason": inst.failure_reason, "message": inst.failure_message}
    return {
        "phase": inst.phase,
        "endpoint": endpoint,
        "failure": failure,
        "observed_generation": inst.observed_generation,
    }


def status_view_sql(row: str, *, phase: str | None = None, endpoint: bool = True) -> str:
    """``status_view`` as a jsonb expression over the instance columns of ``row``;
    with ``phase`` (a SQL literal) and ``endpoint=False``, the view after a change
    to that phase that also cleared the endpoint."""
    endpoint_sql = (
        f"CASE WHEN {row}.endpoint_host <> '' AND {row}.endpoint_port <> 0 THEN "
        f"jsonb_build_object('host', {row}.endpoint_host, 'port', {row}.endpoint_port) END"
        if endpoint
        else "NULL::jsonb"
    )
    return (
        f"jsonb_build_object('phase', {phase or f'{row}.phase'}, 'endpoint', {endpoint_sql}, "
        f"'failure', CASE WHEN {row}.failure_reason <> '' THEN jsonb_build_object("
        f"'reason', {row}.failure_reason, 'message', {row}.failure_message) END, "
        f"'observed_generation', {row}.observed_generation)"
    )

"""Why an ECS task stopped (or a ``RunTask`` placed none), as an ``ExitCause``.

The classes follow AWS's own documentation:

- ``stopCode`` (API reference, ``Task.stopCode``; ECS developer guide "Amazon ECS
  stopped tasks error codes"): ``SpotInterruption`` and ``TerminationNotice`` (a
  Fargate Spot reclaim), ``ServiceSchedulerInitiated`` and ``InfrastructureHealth``
  (AWS replaced the task) are AWS-initiated: INFRASTRUCTURE.
- A ``stoppedReason`` saying "ECS is performing maintenance on the underlying
  infrastructure hosting the task" is a Fargate task retirement (developer guide
  "Task retirement and maintenance for AWS Fargate"): INFRASTRUCTURE, whatever
  the stop code.
- "Capacity is unavailable at this time" (a ``RunTask`` failure, or a stopped
  reason) and ``CannotPullContainerError`` with a registry's rate limit
  (``toomanyrequests``, HTTP 429; Docker Hub's anonymous pull limit) are
  transient: CAPACITY. ECS's own service scheduler retries such tasks for ever,
  with its delay growing to minutes ("Amazon ECS service throttle logic").
- "You've reached the limit on the number of tasks you can run concurrently" (a
  ``RunTask`` refused with ``ClientException``, or a ``failures[].reason``: the
  account's Fargate concurrent-task quota, "Amazon ECS service quotas") lasts until
  other tasks stop or the quota is raised: CAPACITY, reason ``TaskQuotaReached``.
- Everything else (``EssentialContainerExited``, other ``TaskFailedToStart``
  errors, a ``UserInitiated`` stop by someone else than this service) is a CRASH.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chroma_orch.runtimes.base import ExitCause

INFRASTRUCTURE_CODES = frozenset(
    {"SpotInterruption", "TerminationNotice", "ServiceSchedulerInitiated", "InfrastructureHealth"}
)
MAINTENANCE = re.compile(r"performing maintenance on the underlying infrastructure", re.I)
NO_CAPACITY = re.compile(r"capacity is unavailable", re.I)
PULL_THROTTLED = re.compile(r"toomanyrequests|rate limit|\b429\b", re.I)
TASK_QUOTA = re.compile(r"reached the limit on the number of tasks you can run concurrently", re.I)

CAPACITY_UNAVAILABLE = "CapacityUnavailable"
PULL_THROTTLED_REASON = "ImagePullThrottled"
TASK_QUOTA_REASON = "TaskQuotaReached"


def classify_stop(task: Mapping[str, Any]) -> tuple[str, ExitCause]:
    """The reason to show and the class of a stopped task."""
    code = str(task.get("stopCode") or "TaskStopped")
    stopped = str(task.get("stoppedReason") or "")
    details = " ".join(str(c.get("reason") or "") for c in task.get("containers") or [])
    said = f"{stopped} {details}"
    if code in INFRASTRUCTURE_CODES or MAINTENANCE.search(said):
        return code, ExitCause.INFRASTRUCTURE
    if NO_CAPACITY.search(said):
        return CAPACITY_UNAVAILABLE, ExitCause.CAPACITY
    if "CannotPullContainerError" in said and PULL_THROTTLED.search(said):
        return PULL_THROTTLED_REASON, ExitCause.CAPACITY
    return code, ExitCause.CRASH


def classify_run_failures(failures: list[Mapping[str, Any]]) -> tuple[str, ExitCause]:
    """The reason and class of a ``RunTask`` that placed no task (its ``failures``)."""
    said = " ".join(f"{f.get('reason') or ''} {f.get('detail') or ''}" for f in failures)
    if NO_CAPACITY.search(said):
        return CAPACITY_UNAVAILABLE, ExitCause.CAPACITY
    if TASK_QUOTA.search(said):
        return TASK_QUOTA_REASON, ExitCause.CAPACITY
    return "RunTaskFailed", ExitCause.CRASH


def classify_run_rejection(message: str) -> tuple[str, ExitCause]:
    """The reason and class of a ``RunTask`` ECS refused outright (``ClientException``
    and the like): the task quota waits, anything else is a crash."""
    if TASK_QUOTA.search(message):
        return TASK_QUOTA_REASON, ExitCause.CAPACITY
    return "RunTaskRejected", ExitCause.CRASH

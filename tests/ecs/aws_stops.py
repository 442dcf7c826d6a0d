"""AWS behaviour moto does not show: tasks AWS stops on its own, and RunTask finding
no capacity. moto keeps the server in-process, so the test puts the task (or the
answer) in the state real ECS would. Each function names the AWS behaviour and
cites where AWS documents it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.backends import get_backend
from moto.core.responses import ActionResult
from moto.ecs.responses import EC2ContainerServiceResponse

from tests.ecs import aws_behaviour

ACCOUNT = "123456789012"

NO_CAPACITY = (
    "Capacity is unavailable at this time. Please try again later or in a different "
    "availability zone"
)
"""RunTask's ``failures[].reason`` when Fargate has no room (seen in the field; ECS
developer guide "Troubleshooting: stopped task errors", and ECS service events)."""
MAINTENANCE = (
    "Task stopped due to: ECS is performing maintenance on the underlying infrastructure "
    "hosting the task."
)
"""``stoppedReason`` of a retired Fargate task (developer guide "Task retirement and
maintenance for AWS Fargate on Amazon ECS")."""
DOCKER_HUB_LIMIT = (
    "CannotPullContainerError: pull image manifest has been retried 5 time(s): "
    "toomanyrequests: You have reached your pull rate limit. You may increase the limit "
    "by authenticating and upgrading: https://www.docker.com/increase-rate-limit"
)
"""``stoppedReason`` of a task whose image pull Docker Hub throttled (developer guide
"CannotPullContainer task errors"; Docker's "Docker Hub usage and limits")."""


def stop_as_aws(region: str, cluster: str, task_arn: str, stop_code: str, reason: str) -> None:
    """A task AWS stopped: STOPPED, desired STOPPED, ``stopCode`` (one of the API's
    ``TaskStopCode`` values) and ``stoppedReason``. moto's Task has no stop code."""
    task = get_backend("ecs")[ACCOUNT][region].tasks[cluster][task_arn]
    task.last_status = "STOPPED"
    task.desired_status = "STOPPED"
    task.__dict__["stop_code"] = stop_code
    task.stopped_reason = reason
    if aws_behaviour.LAYER is not None:  # ECS sends a task state change event
        aws_behaviour.LAYER.describe_changed(region, cluster, task_arn)


def exit_as_aws(region: str, cluster: str, task_arn: str, exit_code: int) -> None:
    """A task whose essential container ran to its end: ``EssentialContainerExited``
    with the container's exit code (what a one-shot task, e.g. the data removal,
    ends as; "Amazon ECS stopped tasks error codes"). moto never runs it.

    The exit code is set before the stop: the stop publishes the task's state change
    (the eventual-consistency layer keeps that view), and moto's containers default to
    exit code 0, so a stop published first told the runtime a failed task succeeded."""
    task = get_backend("ecs")[ACCOUNT][region].tasks[cluster][task_arn]
    for container in task.containers:
        container.exitCode = exit_code
    stop_as_aws(
        region, cluster, task_arn, "EssentialContainerExited", "Essential container in task exited"
    )


def retire(region: str, cluster: str, task_arn: str) -> None:
    """Fargate task retirement / maintenance: AWS stops a healthy task."""
    stop_as_aws(region, cluster, task_arn, "ServiceSchedulerInitiated", MAINTENANCE)


def spot_interrupt(region: str, cluster: str, task_arn: str) -> None:
    """A Fargate Spot task reclaimed (stop code ``SpotInterruption``; developer guide
    "Fargate Spot": a two-minute warning, then the task stops)."""
    stop_as_aws(region, cluster, task_arn, "SpotInterruption", "Your Spot Task was interrupted.")


def pull_throttled(region: str, cluster: str, task_arn: str) -> None:
    """The image pull was rate-limited: the task never started (``TaskFailedToStart``)."""
    stop_as_aws(region, cluster, task_arn, "TaskFailedToStart", DOCKER_HUB_LIMIT)


@contextmanager
def no_capacity(times: int) -> Iterator[list[int]]:
    """The next ``times`` RunTask calls place no task and answer, as Fargate does when
    it has no room, ``failures`` with the capacity reason. Yields the count so far."""
    original = EC2ContainerServiceResponse.run_task
    refused = [0]

    def run_task(self: EC2ContainerServiceResponse) -> Any:
        if refused[0] < times:
            refused[0] += 1
            return ActionResult({"tasks": [], "failures": [{"reason": NO_CAPACITY}]})
        return original(self)

    EC2ContainerServiceResponse.run_task = run_task  # type: ignore[method-assign]
    try:
        yield refused
    finally:
        EC2ContainerServiceResponse.run_task = original  # type: ignore[method-assign]

"""AWS behaviour moto does not show: a task takes its time to start.

moto starts a task at once (``RUNNING`` from its RunTask on) and stamps it with no
times. On AWS a task goes through ``PROVISIONING`` (its network interface is
attached), ``PENDING`` (the agent pulls the image, then starts the containers),
``ACTIVATING`` and ``RUNNING``, 30 to 90 seconds on Fargate, and DescribeTasks
says when it reached each: ``createdAt``, ``connectivityAt``, ``pullStartedAt``,
``pullStoppedAt``, ``startedAt`` (developer guide, "Amazon ECS task lifecycle":
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-lifecycle-explanation.html;
API reference, ``Task``:
https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Task.html).

``TaskLifecycle`` holds the tasks launched while it is set (``AwsBehaviour.lifecycle``)
at the stage the test chose, and moves them on only when the test says
(``advance``): no timing, every stage observable for as long as the test needs.
The JSON protocol carries timestamps as epoch seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

STAGES = ("PROVISIONING", "PENDING", "PULLING", "PULLED", "RUNNING")
"""The stages a test can hold tasks at: ECS's start statuses, with ``PENDING`` split
into before, during and after the image pull."""
_STATUS = {"PULLING": "PENDING", "PULLED": "PENDING"}
"""``lastStatus`` during the pull: the task stays ``PENDING``."""
_STAMP = {
    "PENDING": "connectivityAt",
    "PULLING": "pullStartedAt",
    "PULLED": "pullStoppedAt",
    "RUNNING": "startedAt",
}
"""The task field AWS sets as the task reaches each stage (``PROVISIONING``:
``createdAt``, the RunTask's time)."""


@dataclass
class TaskLifecycle:
    """Holds the tasks launched while set at ``stage``; ``advance`` moves them on."""

    stage: str = "PROVISIONING"
    reached_at: dict[str, float] = field(default_factory=dict)
    """Epoch seconds each stage was reached (``advance``); after each task's creation."""
    created_at: dict[str, float] = field(default_factory=dict)
    """Epoch seconds of each held task's RunTask, by ARN."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self, stage: str) -> None:
        """Move every held task on to ``stage`` (and through the stages before it)."""
        with self._lock:
            target = STAGES.index(stage)
            for passed in STAGES[STAGES.index(self.stage) + 1 : target + 1]:
                self.reached_at[passed] = time.time()
            self.stage = stage

    def launched(self, answer: dict[str, Any]) -> None:
        """A RunTask answer: its tasks are held from now on, and answered as AWS
        answers RunTask (``PROVISIONING``, ``createdAt``)."""
        with self._lock:
            for task in answer.get("tasks") or []:
                self.created_at.setdefault(str(task["taskArn"]), time.time())
        self.describe(answer)

    def describe(self, answer: dict[str, Any]) -> None:
        """Rewrite the held tasks of a DescribeTasks (or RunTask) answer as AWS would
        show them at the current stage (a task moto stopped is left as it is)."""
        with self._lock:
            for task in answer.get("tasks") or []:
                created = self.created_at.get(str(task["taskArn"]))
                if created is not None and task.get("lastStatus") == "RUNNING":
                    self._stage_task(task, created)

    def _stage_task(self, task: dict[str, Any], created: float) -> None:
        task["lastStatus"] = _STATUS.get(self.stage, self.stage)
        task["createdAt"] = created
        for stage in STAGES[1 : STAGES.index(self.stage) + 1]:
            task[_STAMP[stage]] = max(self.reached_at[stage], created)

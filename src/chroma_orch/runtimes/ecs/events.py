"""Event-driven observation: "ECS Task State Change" events from an SQS queue.

An EventBridge rule sends the cluster's task state changes to the queue
(docs/ecs.md "Event-driven observation"). ``TaskEvents.run`` long-polls it,
records the state in each event's ``detail`` (the shape of a DescribeTasks task)
in the shared ``TaskStates`` (any replica may receive a message: SQS gives each
to one consumer, so the states live in the database, where every replica's
``poll`` reads them), then deletes the messages. Events of tasks another service
started are dropped. Ordering is the store's job: a state of a lower ``version``
never replaces a higher one.

"Amazon ECS task state change events":
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs_task_events.html
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from chroma_orch.runtimes.base import TaskStates
from chroma_orch.runtimes.ecs.api import EcsApi
from chroma_orch.runtimes.ecs.settings import EcsSettings

log = logging.getLogger(__name__)

DETAIL_TYPE = "ECS Task State Change"
_FORGET_AFTER = 86_400.0
"""Seconds after which a state nobody checked is forgotten (its task is long gone)."""
_ERROR_DELAY = 5.0


def version_of(task: Mapping[str, Any]) -> int:
    """ECS's per-task counter, raised with every state change ("version")."""
    version = task.get("version")
    return int(version) if isinstance(version, int | str) and str(version).isdigit() else 0


def _same_cluster(arn: str, cluster: str) -> bool:
    return arn == cluster or arn.endswith(f"/{cluster}")


def task_state(body: str, cluster: str, started_by: str) -> tuple[str, int, dict[str, Any]] | None:
    """``(task ARN, version, detail)`` of a state-change event of one of our tasks."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("detail-type") != DETAIL_TYPE:
        return None
    detail = event.get("detail")
    if not isinstance(detail, dict):
        return None
    if detail.get("startedBy") != started_by or not detail.get("taskArn"):
        return None
    if not _same_cluster(str(detail.get("clusterArn") or ""), cluster):
        return None
    return str(detail["taskArn"]), version_of(detail), detail


class TaskEvents:
    """Consumes the events queue into ``states`` (see the module docstring)."""

    def __init__(self, api: EcsApi, settings: EcsSettings, states: TaskStates) -> None:
        if not settings.events_queue_url:
            raise ValueError("TaskEvents needs events_queue_url")
        self.api = api
        self.settings = settings
        self.states = states
        self.queue_url = settings.events_queue_url

    async def run(self) -> None:
        """Receive until cancelled; errors are logged and retried."""
        while True:
            try:
                await self.receive_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("events queue receive failed error=%s", type(exc).__name__)
                await asyncio.sleep(_ERROR_DELAY)

    async def receive_once(self) -> int:
        """One long poll: record the states received, then delete the messages."""
        sqs = await self.api.client("sqs")
        answer = await sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=self.settings.events_wait_seconds,
        )
        messages = answer.get("Messages") or []
        if not messages:
            await self.states.prune(_FORGET_AFTER)
            return 0
        cluster, started_by = self.settings.cluster, self.settings.service_name
        found = [task_state(str(m.get("Body") or ""), cluster, started_by) for m in messages]
        await self.states.record(s for s in found if s is not None)
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        await sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return len(messages)

    async def record_described(self, tasks: Iterable[Mapping[str, Any]]) -> None:
        """Record DescribeTasks answers (their ``version`` orders them among the
        events); a database that cannot be written only costs a describe later."""
        states = [(str(t["taskArn"]), version_of(t), t) for t in tasks if t.get("taskArn")]
        try:
            await self.states.record(states)
        except Exception as exc:
            log.warning("recording task states failed error=%s", type(exc).__name__)

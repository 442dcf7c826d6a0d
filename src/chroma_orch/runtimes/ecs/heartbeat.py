"""RUNNING is believed when ECS says RUNNING and the task's Chroma heartbeat has
answered (once per task: a later network blip does not turn a server into a crash;
that a running task still answers is the reconciler's heartbeat pass's question,
asked with a failure threshold: ``EcsRuntime.heartbeat``). A confirmed task's
observation says so: start phase ``heartbeat_answered``, with the time its heartbeat
first answered."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chroma_orch.runtimes.base import Observation, ObservedState, StartPhase
from chroma_orch.runtimes.heartbeat import answers

_CONCURRENCY = 64


class HeartbeatGate:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._answered: dict[str, datetime] = {}  # task ARN: when its heartbeat answered
        self._probes = asyncio.Semaphore(_CONCURRENCY)

    async def confirm(self, observed: dict[str, Observation], arns: Mapping[str, Any]) -> None:
        """Turn RUNNING observations of unconfirmed tasks into STARTING until they answer;
        forget tasks that exited."""
        unconfirmed = [
            key
            for key, o in observed.items()
            if o.state is ObservedState.RUNNING and arns[key] not in self._answered
        ]
        results = await asyncio.gather(*(self._probe(observed[k]) for k in unconfirmed))
        for key, answered in zip(unconfirmed, results, strict=True):
            if answered:
                self._answered[str(arns[key])] = datetime.now(UTC)
            else:
                observed[key] = dataclasses.replace(
                    observed[key],
                    state=ObservedState.STARTING,
                    message="ECS task RUNNING, heartbeat not answering yet",
                )
        for key, observation in observed.items():
            if observation.state is ObservedState.EXITED:
                self._answered.pop(str(arns[key]), None)
            elif observation.state is ObservedState.RUNNING:
                observed[key] = _answered(observation, self._answered[str(arns[key])])

    async def _probe(self, observation: Observation) -> bool:
        endpoint = observation.endpoint
        if endpoint is None:
            return False
        async with self._probes:
            return await answers(endpoint, self._timeout)


def _answered(observation: Observation, at: datetime) -> Observation:
    times = {**observation.phase_times, StartPhase.HEARTBEAT_ANSWERED: at}
    return dataclasses.replace(observation, phase=StartPhase.HEARTBEAT_ANSWERED, phase_times=times)

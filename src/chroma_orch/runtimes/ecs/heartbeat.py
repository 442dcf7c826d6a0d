"""RUNNING is believed when ECS says RUNNING and the task's Chroma heartbeat has
answered (once per task: a later network blip does not turn a server into a crash;
that a running task still answers is the reconciler's heartbeat pass's question,
asked with a failure threshold: ``EcsRuntime.heartbeat``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from chroma_orch.runtimes.base import Observation, ObservedState
from chroma_orch.runtimes.heartbeat import answers

_CONCURRENCY = 64


class HeartbeatGate:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._answered: set[str] = set()  # task ARNs whose heartbeat answered
        self._probes = asyncio.Semaphore(_CONCURRENCY)

    async def confirm(self, observed: dict[str, Observation], arns: Mapping[str, Any]) -> None:
        """Turn RUNNING observations of unconfirmed tasks into STARTING until they answer;
        forget tasks that exited."""
        unconfirmed = [
            key
            for key, o in observed.items()
            if o.state is ObservedState.RUNNING and arns[key] not in self._answered
        ]
        answers = await asyncio.gather(*(self._probe(observed[k]) for k in unconfirmed))
        for key, answered in zip(unconfirmed, answers, strict=True):
            if answered:
                self._answered.add(str(arns[key]))
            else:
                observed[key] = Observation(
                    ObservedState.STARTING,
                    endpoint=observed[key].endpoint,
                    message="ECS task RUNNING, heartbeat not answering yet",
                )
        for key, observation in observed.items():
            if observation.state is ObservedState.EXITED:
                self._answered.discard(str(arns[key]))

    async def _probe(self, observation: Observation) -> bool:
        endpoint = observation.endpoint
        if endpoint is None:
            return False
        async with self._probes:
            return await answers(endpoint, self._timeout)

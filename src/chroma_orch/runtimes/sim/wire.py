"""The shared cloud's wire format (``cloud_server`` ↔ ``remote``): JSON of the
runtime's own types, one function pair each, so both ends agree in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chroma_orch.runtimes.base import (
    Endpoint,
    ExitCause,
    InstanceSpec,
    Observation,
    ObservedState,
    ServerSpec,
    StartFailedError,
    StartPhase,
)


@dataclass(frozen=True)
class ServerRef:
    """One server of an instance: the handle's data (``serial``: which start)."""

    instance_id: str
    serial: int
    port: int

    def to_json(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "serial": self.serial, "port": self.port}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ServerRef:
        return cls(str(raw["instance_id"]), int(raw["serial"]), int(raw["port"]))


def spec_to_json(spec: InstanceSpec) -> dict[str, Any]:
    return {
        "instance_id": spec.instance_id,
        "tenant_id": spec.tenant_id,
        "name": spec.name,
        "generation": spec.generation,
        "port": spec.port,
        "options": dict(spec.options),
        "server": spec.server.to_json(),
        "start_token": spec.start_token,
    }


def spec_from_json(raw: dict[str, Any]) -> InstanceSpec:
    port = raw.get("port")
    return InstanceSpec(
        instance_id=str(raw["instance_id"]),
        tenant_id=str(raw["tenant_id"]),
        name=str(raw["name"]),
        generation=int(raw["generation"]),
        port=None if port is None else int(port),
        options=dict(raw.get("options") or {}),
        server=ServerSpec.from_json(raw.get("server")),
        start_token=str(raw.get("start_token", "")),
    )


def failure_to_json(error: StartFailedError) -> dict[str, Any]:
    return {"reason": error.reason, "message": error.message, "cause": error.cause.value}


def failure_from_json(raw: dict[str, Any]) -> StartFailedError:
    return StartFailedError(str(raw["reason"]), str(raw["message"]), ExitCause(raw["cause"]))


def observation_to_json(observed: Observation) -> dict[str, Any]:
    endpoint = observed.endpoint
    return {
        "state": observed.state.value,
        "endpoint": None if endpoint is None else [endpoint.host, endpoint.port],
        "reason": observed.reason,
        "message": observed.message,
        "cause": observed.cause.value,
        "phase": None if observed.phase is None else observed.phase.value,
        "phase_times": {p.value: t.isoformat() for p, t in observed.phase_times.items()},
    }


def observation_from_json(raw: dict[str, Any]) -> Observation:
    endpoint, phase = raw.get("endpoint"), raw.get("phase")
    return Observation(
        ObservedState(raw["state"]),
        endpoint=None if endpoint is None else Endpoint(str(endpoint[0]), int(endpoint[1])),
        reason=raw.get("reason"),
        message=raw.get("message"),
        cause=ExitCause(raw.get("cause", ExitCause.CRASH.value)),
        phase=None if phase is None else StartPhase(phase),
        phase_times={
            StartPhase(p): datetime.fromisoformat(t)
            for p, t in (raw.get("phase_times") or {}).items()
        },
    )

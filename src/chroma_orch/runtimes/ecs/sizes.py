"""Fargate's valid task sizes: CPU units and the memory (MiB) each allows.

"Task CPU and memory" (Amazon ECS developer guide, task definition parameters for
Fargate: https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size).
The table holds for Linux tasks of either architecture: ARM64 is "available for
Linux containers on Fargate" with no size rule of its own (API reference,
RuntimePlatform: https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RuntimePlatform.html).
"""

from __future__ import annotations

GIB = 1024
CPU_UNITS_PER_VCPU = 1024


def _gib(first: int, last: int, step: int = 1) -> tuple[int, ...]:
    return tuple(n * GIB for n in range(first, last + 1, step))


FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: _gib(1, 4),
    1024: _gib(2, 8),
    2048: _gib(4, 16),
    4096: _gib(8, 30),
    8192: _gib(16, 60, 4),
    16384: _gib(32, 120, 8),
}


def vcpu(cpu: int) -> str:
    """CPU units as vCPU the way AWS writes them: 0.25, 0.5, 1, 2..."""
    return f"{cpu / CPU_UNITS_PER_VCPU:g} vCPU"


def _describe(memory: tuple[int, ...]) -> str:
    if len(memory) <= 3:
        return ", ".join(map(str, memory[:-1])) + f" or {memory[-1]} MiB"
    step = memory[1] - memory[0]
    return f"{memory[0]}-{memory[-1]} MiB in {step} MiB steps"


def size_problem(cpu: int, memory: int) -> str | None:
    """None when Fargate runs a task of ``cpu`` units and ``memory`` MiB, else why not,
    as one sentence (e.g. "4096 MiB is not valid with 0.25 vCPU on Fargate (0.25
    vCPU allows 512, 1024 or 2048 MiB)")."""
    allowed = FARGATE_SIZES.get(cpu)
    if allowed is None:
        sizes = ", ".join(f"{units} ({vcpu(units)})" for units in FARGATE_SIZES)
        return f"{cpu} CPU units is not a Fargate task size (Fargate takes {sizes})"
    if memory not in allowed:
        return (
            f"{memory} MiB is not valid with {vcpu(cpu)} on Fargate "
            f"({vcpu(cpu)} allows {_describe(allowed)})"
        )
    return None

"""Fargate's valid task sizes: CPU units and the memory (MiB) each allows.

"Task CPU and memory" (Amazon ECS developer guide, task definition parameters for
Fargate: https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size).
"""

from __future__ import annotations

GIB = 1024


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


def _describe(memory: tuple[int, ...]) -> str:
    if memory[0] < GIB:
        return ", ".join(str(m) for m in memory) + " MiB"
    step = (memory[1] - memory[0]) // GIB
    steps = f" in {step} GiB steps" if step > 1 else " in 1 GiB steps"
    return f"{memory[0] // GIB}-{memory[-1] // GIB} GiB{steps}"


def size_problem(cpu: int, memory: int) -> str | None:
    """None when Fargate runs a task of ``cpu`` units and ``memory`` MiB, else why not."""
    allowed = FARGATE_SIZES.get(cpu)
    if allowed is None:
        return f"CPU {cpu} is not a Fargate size (one of {', '.join(map(str, FARGATE_SIZES))})"
    if memory not in allowed:
        return f"CPU {cpu} allows memory {_describe(allowed)}, not {memory} MiB"
    return None

"""The simulation's random draws: what one start of a simulated server will do.

One ``random.Random`` per simulated cloud, seeded; every start takes the same number
of draws in the same order, so the same seed gives the same fates to the same order
of starts whatever the fates were. Durations here are simulated seconds (before
``time_scale``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from chroma_orch.runtimes.base import ExitCause, StartPhase
from chroma_orch.runtimes.sim.settings import SimRuntimeSettings

Z95 = 1.6448536269514722
"""The standard normal's 95th percentile: p95 = median * exp(sigma * Z95)."""


@dataclass(frozen=True)
class Fate:
    """What one start will do."""

    latency: float
    """Seconds from start to heartbeat_answered."""
    phases: tuple[tuple[StartPhase, float], ...]
    """Each start phase with the seconds after the start it is reached."""
    failure: ExitCause | None
    """Why the start fails at once, or None: it starts."""
    exit_after: float | None
    """Seconds it runs (after heartbeat_answered) until it exits by itself; None: never."""
    exit_cause: ExitCause
    """Why it exits then: CRASH or INFRASTRUCTURE (a retirement)."""


class Draws:
    def __init__(self, settings: SimRuntimeSettings) -> None:
        self.settings = settings
        self.random = random.Random(settings.seed)  # noqa: S311 (a simulation, not secrets)
        self.mu = math.log(settings.start_median)
        self.sigma = math.log(settings.start_p95 / settings.start_median) / Z95

    def fate(self) -> Fate:
        """The next start's fate: always six draws, in this order."""
        s, draw = self.settings, self.random
        latency = max(s.start_min, draw.lognormvariate(self.mu, self.sigma))
        fails, capacity = draw.random() < s.start_failure_rate, draw.random() < s.capacity_share
        crash, retire = _lifetime(draw, s.crash_rate), _lifetime(draw, s.retirement_rate)
        jitter = draw.random()
        failure = (ExitCause.CAPACITY if capacity else ExitCause.CRASH) if fails else None
        exit_after, cause = min((crash, ExitCause.CRASH), (retire, ExitCause.INFRASTRUCTURE))
        return Fate(
            latency=latency,
            phases=self._phases(latency, jitter),
            failure=failure,
            exit_after=None if math.isinf(exit_after) else exit_after,
            exit_cause=cause,
        )

    def _phases(self, latency: float, jitter: float) -> tuple[tuple[StartPhase, float], ...]:
        """The phases' times: the shares of the latency, each varied by up to ±20 %
        (one draw for all), renormalised so the last ends at ``latency``."""
        shares = [(StartPhase(name), share) for name, share in self.settings.phase_shares.items()]
        shares.sort(key=lambda item: item[0].rank)
        weights = [
            share * (0.8 + 0.4 * ((jitter * (i + 1)) % 1)) for i, (_, share) in enumerate(shares)
        ]
        total, reached, at = sum(weights), [], 0.0
        for (phase, _), weight in zip(shares, weights, strict=True):
            reached.append((phase, at))
            at += latency * weight / total
        reached.append((StartPhase.HEARTBEAT_ANSWERED, latency))
        return tuple(reached)


def _lifetime(draw: random.Random, per_hour: float) -> float:
    """Seconds until an event of ``per_hour`` rate (exponential); inf at rate 0. Draws
    once either way (the draws stay aligned whatever the rates)."""
    u = draw.random()
    return math.inf if per_hour <= 0 else -math.log(1.0 - u) * 3600.0 / per_hour

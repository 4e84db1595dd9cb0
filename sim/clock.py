"""Simulated time: its units, and the order of the control plane's same-time events.

Time is in seconds from the start of live traffic. :data:`DAY_S` and :data:`HOUR_S` are the only
home of the day and the hour; :func:`day_of` and :func:`hour_of` bucket times the way every log
table and counter does.

SimPy pops events by ``(time, priority, insertion)``. Every control-plane event is scheduled with
the priority of its stage (:data:`STAGES`, earlier first), so at any instant pacing runs first,
then a ramp step, the campaigns log, churn, the offsite feature job, a feature-registry change, a
release, a query rollout, enrichment, the snapshot, deploys, the large and the fresh builds, and
the traffic last. ``URGENT`` (0) stays reserved for SimPy itself (process start, the end of the
run), so stages take priorities 1, 2, ...
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy
from simpy.events import NORMAL, URGENT, EventPriority

DAY_S = 86_400.0
HOUR_S = 3_600.0

STAGES = ("pacing", "ramp", "campaigns", "churn", "offsite_refresh", "feature_change", "release",
          "query_rollout", "enrichment", "snapshot", "deploy", "large_build", "fresh_build",
          "traffic")
PRIORITY = {stage: EventPriority(URGENT + 1 + i) for i, stage in enumerate(STAGES)}


def day_of(t: np.ndarray) -> np.ndarray:
    """(n,) times in seconds -> (n,) int32 simulated day."""
    return np.floor(t / DAY_S).astype(np.int32)


def hour_of(t: float) -> int:
    """The simulated hour of time ``t`` (seconds)."""
    return int(t // HOUR_S)


class Scheduled(simpy.Timeout):
    """A timeout that fires in the order of its ``stage`` among same-time events (see
    :class:`StagedEnvironment`, which schedules it)."""

    def __init__(self, env: StagedEnvironment, stage: str, delay: float) -> None:
        if stage not in PRIORITY:
            raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
        self.priority = PRIORITY[stage]
        super().__init__(env, delay)


class StagedEnvironment(simpy.Environment):
    """A SimPy environment that schedules a :class:`Scheduled` timeout with its stage's priority
    (every other event as SimPy would). Through the public ``schedule`` only: SimPy's
    ``Timeout`` asks for ``NORMAL`` priority, and this is where the stage's takes its place."""

    def schedule(self, event: simpy.Event, priority: EventPriority = NORMAL,
                 delay: float = 0) -> None:
        if isinstance(event, Scheduled):
            priority = event.priority
        super().schedule(event, priority, delay)

    def wait(self, stage: str, delay: float) -> Scheduled:
        """An event ``delay`` seconds from now, ordered by ``stage`` among same-time events."""
        return Scheduled(self, stage, delay)


Wait = Callable[[str, float], simpy.Event]  # (stage, delay) -> event: StagedEnvironment.wait

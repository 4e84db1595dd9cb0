"""The experiment: per-arm configs, user assignment under a ramp, and the budget designs.

* The treatment arm's config is the base config with the ``experiment.treatment`` overlay merged
  in (:func:`sim.config.overlay.arm_config`, validated like any config when the config is loaded).
* :func:`assignment_draw` / :func:`in_treatment`: a user's draw is a hash of ``(salt, user id)``;
  the user is in treatment while the draw is below the ramp's current share. The draw never
  changes, so when the share grows users only move from control to treatment.
* Designs (:class:`sim.pacing.Budgets`): under ``budget_split`` every campaign's daily budget is
  split by traffic share into independent sub-campaigns, each with its own pacing, each serving
  only its arm, and re-split at every ramp step; under ``user_split`` both arms draw on the same
  budgets and pacing, so they compete for the same money.
"""

from __future__ import annotations

import hashlib

import numpy as np

from sim.clock import DAY_S
from sim.config.schema import RampStep
from sim.rng import ASSIGNMENT, keyed_uniform


def salt_key(salt: str) -> int:
    return int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(), "little") >> 1


def assignment_draw(salt: str, user: np.ndarray) -> np.ndarray:
    """Each user's fixed draw in [0, 1) for ``salt``."""
    return keyed_uniform(salt_key(salt), user, 0, ASSIGNMENT)


def treatment_share(t: float, ramp: list[RampStep]) -> float:
    """The ramp's treatment share at time ``t`` (seconds): the last step started by ``t``, 0 before."""
    share = 0.0
    for step in ramp:  # a handful of steps
        if step.day * DAY_S <= t:
            share = step.share
    return share


def in_treatment(salt: str, user: np.ndarray, share: float) -> np.ndarray:
    """(n,) bool: the users in treatment at this share."""
    return assignment_draw(salt, user) < share


def arm_shares(share: float, arms: list[str]) -> dict[str, float]:
    """Traffic share of each arm."""
    if arms == ["control"]:
        return {"control": 1.0}
    return {"control": 1.0 - share, "treatment": share}

"""An arm: the serving stack one slice of traffic sees (models, index) and its money state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.models.ranker import Ranker
from sim.models.towers import TwoTower
from sim.pacing import Ledger
from sim.serving.index import DeployedIndex


@dataclass
class Arm:
    name: str
    l1: TwoTower
    l2: Ranker
    index: DeployedIndex
    ledger: Ledger
    multiplier: np.ndarray  # (A,) pacing multipliers in (0, 1]
    l1_version: int = 1
    interval_spent: np.ndarray = field(init=False)  # spend since the last pacing update

    def __post_init__(self) -> None:
        self.interval_spent = np.zeros_like(self.multiplier)

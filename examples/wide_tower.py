"""A third L1 family, defined outside the simulator: a wide, shallow two-tower model.

Each tower is one hidden layer four times ``models.l1_hidden`` wide (the built-in ``simple`` has
two hidden layers of ``l1_hidden``). It follows the L1 family protocol
(:mod:`sim.models.families`): a ``TwoTowerBase`` subclass with ``from_config``, the two
``Standardize`` modules, the two towers (the item tower one wider, for the bias slot), the
``item_view`` buffer and its declared serving work. Register it by import path, with this
directory on the Python path (from the repository root)::

    PYTHONPATH=examples python -m sim scenario=skew_sensitivity \\
        'experiment.treatment.models.l1_family="wide_tower:WideTwoTower"' \\
        'readiness.families=[simple,"wide_tower:WideTwoTower"]'

or from Python: ``sim.simulate("skew_sensitivity", experiment={"treatment": {"models":
{"l1_family": "wide_tower:WideTwoTower"}}}, readiness={"families": ["simple",
"wide_tower:WideTwoTower"]})``.
"""

from __future__ import annotations

import torch
from torch import nn

from sim.config.schema import ModelsConfig
from sim.models.towers import Standardize, TwoTowerBase


class WideTwoTower(TwoTowerBase):
    family = "wide"

    def __init__(self, query_width: int, item_width: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.query_norm = Standardize(query_width)
        self.item_norm = Standardize(item_width)
        self.register_buffer("item_view", torch.ones(item_width))
        self.query_tower = nn.Sequential(nn.Linear(query_width, hidden), nn.ReLU(),
                                         nn.Linear(hidden, dim))
        self.item_tower = nn.Sequential(nn.Linear(item_width, hidden), nn.ReLU(),
                                        nn.Linear(hidden, dim + 1))
        self._query_mflops = 2.0 * (query_width * hidden + hidden * dim) / 1e6

    @classmethod
    def from_config(cls, query_slices: list[slice], item_slices: list[slice],
                    models: ModelsConfig) -> WideTwoTower:
        return cls(query_slices[-1].stop, item_slices[-1].stop, models.embedding_dim,
                   4 * models.l1_hidden)

    def query_mflops(self) -> float:
        return self._query_mflops

"""The smallest complete L1 family: each tower one linear layer (docs/families.md, "Writing
one"). Registered by import path with this directory on the Python path::

    PYTHONPATH=examples python -m sim 'models.l1_family="linear_tower:LinearTwoTower"' days=0.5
"""

from __future__ import annotations

import torch
from torch import nn

from sim.config.schema import ModelsConfig
from sim.models.towers import Standardize, TwoTowerBase


class LinearTwoTower(TwoTowerBase):
    family = "linear"

    def __init__(self, query_width: int, item_width: int, dim: int) -> None:
        super().__init__()
        self.query_norm = Standardize(query_width)
        self.item_norm = Standardize(item_width)
        self.register_buffer("item_view", torch.ones(item_width))
        self.query_tower = nn.Linear(query_width, dim)
        self.item_tower = nn.Linear(item_width, dim + 1)  # the vector and its bias slot
        self._mflops = 2.0 * query_width * dim / 1e6

    @classmethod
    def from_config(cls, query_slices: list[slice], item_slices: list[slice],
                    models: ModelsConfig) -> LinearTwoTower:
        return cls(query_slices[-1].stop, item_slices[-1].stop, models.embedding_dim)

    def query_mflops(self) -> float:
        return self._mflops

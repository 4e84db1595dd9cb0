"""The L1 two-tower CVR model.

The query tower maps user features and the surface to a vector ``q`` in R^D; the item tower maps
an ad's feature families to ``(i, b)`` in R^(D+1). Serving appends a constant 1 to ``q``, so the
L1 logit of pCVR is a single inner product ``<(q, 1), (i, b)> = <q, i> + b``: exactly what a
faiss inner-product index over the item vectors returns. Item vectors are computed once per
index build and stored in the index; query vectors once per request.
"""

from __future__ import annotations

import torch
from torch import nn

from sim.config.schema import ModelsConfig
from sim.threads import few_rows_on_one_thread


class Standardize(nn.Module):
    """Fixed affine standardisation with statistics taken from the training data."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    def fit(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def mlp(width_in: int, hidden: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, width_out))


def mlp_mflops(width_in: int, hidden: int, width_out: int) -> float:
    """Multiply-adds of one row through :func:`mlp`, in millions of FLOPs (2 per multiply-add)."""
    return 2.0 * (width_in * hidden + hidden * hidden + hidden * width_out) / 1e6


class TwoTowerBase(nn.Module):
    """What every L1 family shares: standardised inputs, a query tower to R^D and an item tower
    to R^(D+1), and the pair score as their inner product. Subclasses set the four modules.

    ``item_view`` (a buffer, 1 per item input column the model consumes, 0 elsewhere) is the
    model's feature view (``models.l1_features``): columns outside it reach the item tower as 0
    after standardisation, so the model never learns from them and is blind to them at serving.
    Columns inside it that serving fills with the default (a family not onboarded to the L1
    embedding path) reach the tower as ``(0 - mean) / std``: the parity gap."""

    family = ""
    query_norm: Standardize
    item_norm: Standardize
    query_tower: nn.Module
    item_tower: nn.Module
    item_view: torch.Tensor

    @classmethod
    def from_config(cls, query_slices: list[slice], item_slices: list[slice],
                    models: ModelsConfig) -> TwoTowerBase:
        """A freshly initialised model for a world whose query and item inputs are laid out as
        ``query_slices`` and ``item_slices`` (tokens; the last ends at the input's width), sized
        by the ``models`` config (:mod:`sim.models.families`, the protocol)."""
        raise NotImplementedError(f"{cls.__name__} must define the classmethod from_config()")

    def query_mflops(self) -> float:
        """The serving work of one request's query vector, in millions of FLOPs (2 per
        multiply-add of its Linear layers and attention; elementwise work not counted): what the
        latency model charges the query-tower stage (:mod:`sim.serving.latency`). Each family
        declares its own from its architecture."""
        raise NotImplementedError(f"{type(self).__name__} must declare query_mflops()")

    def set_item_view(self, mask: torch.Tensor) -> None:
        self.item_view.copy_(mask)

    def set_query_view(self, mask: torch.Tensor) -> None:
        """The query-side view (``models.l1_user_features``): 1 per query input column the model
        consumes, 0 elsewhere (0 after standardisation, as ``item_view``). A model that consumes
        every column holds no such buffer, so its parameters and outputs are those of a model
        built without the option."""
        if bool((mask == 1).all()):
            if "query_view" in self._buffers:
                del self._buffers["query_view"]
            return
        self.register_buffer("query_view", mask.clone())

    def query_vectors(self, query_x: torch.Tensor) -> torch.Tensor:
        """(B, D+1) query vectors with the constant 1 appended."""
        with few_rows_on_one_thread(query_x.shape[0]):
            x = self.query_norm(query_x)
            if "query_view" in self._buffers:
                x = x * self._buffers["query_view"]
            q = self.query_tower(x)
        return torch.cat([q, torch.ones_like(q[:, :1])], dim=1)

    def item_vectors(self, item_x: torch.Tensor) -> torch.Tensor:
        """(N, D+1) item vectors, the last column the item bias."""
        with few_rows_on_one_thread(item_x.shape[0]):
            return self.item_tower(self.item_norm(item_x) * self.item_view)

    def forward(self, query_x: torch.Tensor, item_x: torch.Tensor) -> torch.Tensor:
        """Logit of pCVR for aligned pairs: (N, query_width), (N, item_width) -> (N,)."""
        return (self.query_vectors(query_x) * self.item_vectors(item_x)).sum(1)


class TwoTower(TwoTowerBase):
    """``simple`` family: two-layer MLP towers. Inputs: (B, query_width) and (N, item_width)."""

    family = "simple"

    def __init__(self, query_width: int, item_width: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.dim = dim
        self.query_norm = Standardize(query_width)
        self.item_norm = Standardize(item_width)
        self.register_buffer("item_view", torch.ones(item_width))
        self.query_tower = mlp(query_width, hidden, dim)
        self.item_tower = mlp(item_width, hidden, dim + 1)
        self._query_mflops = mlp_mflops(query_width, hidden, dim)

    @classmethod
    def from_config(cls, query_slices: list[slice], item_slices: list[slice],
                    models: ModelsConfig) -> TwoTower:
        return cls(query_slices[-1].stop, item_slices[-1].stop, models.embedding_dim,
                   models.l1_hidden)

    def query_mflops(self) -> float:
        return self._query_mflops

"""The ``dhen`` L1 family: a deep hierarchical ensemble of interaction modules per tower.

Each tower cuts its input into feature-family *tokens* (the item tower: one token per ad feature
family; the query tower: the user's latent view, the segment, the surface), projects each token to
``token_dim``, then applies a stack of ``dhen_layers`` layers. A layer is an ensemble of three
different interaction modules over the token set, whose outputs are averaged and added back to the
input (a residual), then layer-normalised:

* ``cross``: a cross-network layer per token, ``x0 * (W x + b)`` (explicit feature crosses);
* ``attention``: multi-head self-attention across the family tokens;
* ``mlp``: a position-wise two-layer MLP.

The flattened tokens map linearly to the output vector (``dim`` for the query tower, ``dim + 1``
for the item tower, the last entry the item bias), exactly as in the ``simple`` family, so both
serve through the same faiss index. DHEN has several times the parameters and latency of
``simple``; how sensitive its embedding space is to version skew comes out of its training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sim.config.schema import ModelsConfig
from sim.models.towers import Standardize, TwoTowerBase
from sim.threads import deterministic


class TokenAttention(nn.Module):
    """Multi-head self-attention across a handful of tokens: (B, T, W) -> (B, T, W)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, w // self.heads).unbind(2)
        att = torch.einsum("bthd,bshd->bhts", q, k) / (w // self.heads) ** 0.5
        mixed = torch.einsum("bhts,bshd->bthd", att.softmax(-1), v)
        return self.out(mixed.reshape(b, t, w))


class AffineLayerNorm(nn.Module):
    """``nn.LayerNorm`` over the last dimension (the same parameters, names included). In
    deterministic mode (:mod:`sim.threads`) its affine step is written out: the normalisation
    without affine parameters, then ``* weight + bias``, whose gradients are plain sums autograd
    takes the same way at any thread count, where torch's fused backward sums the gradients of
    ``weight`` and ``bias`` per thread and gives other bits at 2 threads than at 1."""

    def __init__(self, width: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.width, self.eps = width, eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if deterministic():
            return F.layer_norm(x, (self.width,), eps=self.eps) * self.weight + self.bias
        return F.layer_norm(x, (self.width,), self.weight, self.bias, self.eps)


class DhenLayer(nn.Module):
    def __init__(self, width: int, heads: int, layer_norm: bool = True) -> None:
        super().__init__()
        self.cross = nn.Linear(width, width)
        self.attention = TokenAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, width))
        self.norm: nn.Module = AffineLayerNorm(width) if layer_norm else nn.Identity()

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        mixed = (x0 * self.cross(x) + self.attention(x) + self.mlp(x)) / 3.0
        return self.norm(x + mixed)


class DhenTower(nn.Module):
    """Tokens from column slices of the input, then DHEN layers, then a linear read-out."""

    def __init__(self, slices: list[slice], width_out: int, token_dim: int, layers: int,
                 heads: int, layer_norm: bool = True) -> None:
        super().__init__()
        self.slices = slices
        self.embed = nn.ModuleList(nn.Linear(s.stop - s.start, token_dim) for s in slices)
        self.layers = nn.ModuleList(DhenLayer(token_dim, heads, layer_norm) for _ in range(layers))
        self.out = nn.Linear(len(slices) * token_dim, width_out)
        t, w = len(slices), token_dim
        # per layer and token: cross W^2, qkv 3W^2, attention out W^2, mlp 2W^2 + 2W^2; across
        # tokens: attention scores and mixing, T^2 W each
        macs = (sum(s.stop - s.start for s in slices) * w + layers * (9 * t * w * w + 2 * t * t * w)
                + t * w * width_out)
        self.mflops = 2.0 * macs / 1e6  # one row's forward, millions of FLOPs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.stack([emb(x[:, s]) for emb, s in zip(self.embed, self.slices, strict=True)],
                             dim=1)
        h, x0 = tokens, tokens
        for layer in self.layers:
            h = layer(h, x0)
        return self.out(h.flatten(1))


class DhenTwoTower(TwoTowerBase):
    """The serving interface of :class:`sim.models.towers.TwoTowerBase` with DHEN towers."""

    family = "dhen"

    def __init__(self, query_slices: list[slice], item_slices: list[slice], dim: int,
                 token_dim: int, layers: int, heads: int, layer_norm: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.query_norm = Standardize(query_slices[-1].stop)
        self.item_norm = Standardize(item_slices[-1].stop)
        self.register_buffer("item_view", torch.ones(item_slices[-1].stop))
        self.query_tower = DhenTower(query_slices, dim, token_dim, layers, heads, layer_norm)
        self.item_tower = DhenTower(item_slices, dim + 1, token_dim, layers, heads, layer_norm)
        self._query_mflops = self.query_tower.mflops

    @classmethod
    def from_config(cls, query_slices: list[slice], item_slices: list[slice],
                    models: ModelsConfig) -> DhenTwoTower:
        m = models
        return cls(query_slices, item_slices, m.embedding_dim, m.dhen_token_dim, m.dhen_layers,
                   m.dhen_heads, m.dhen_layer_norm)

    def query_mflops(self) -> float:
        return self._query_mflops

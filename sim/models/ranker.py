"""The L2 ranker: pCTR and pCVR from every feature in the L2 feature store.

Input per (request, candidate) pair: the user features, the surface one-hot, the ad's feature
families, and the elementwise product of the user's and the ad's observed latent views (a cross
feature). Output: two logits, pCTR at the top slot and pCVR given a click. During training a
learned per-slot bias absorbs the position effect of the exploration log; serving asks for the top
slot, and the auction's ``slot_ctr`` handles positions.
"""

from __future__ import annotations

import torch
from torch import nn

from sim.models.towers import Standardize, mlp, mlp_mflops
from sim.threads import few_rows_on_one_thread


class Ranker(nn.Module):
    def __init__(self, user_width: int, n_surfaces: int, ad_width: int, latent_dim: int,
                 hidden: int, n_positions: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        width = user_width + n_surfaces + ad_width + latent_dim
        self.norm = Standardize(width)
        self.net = mlp(width, hidden, 2)
        self.position_bias = nn.Parameter(torch.zeros(n_positions))
        self._pair_mflops = mlp_mflops(width, hidden, 2)

    def pair_mflops(self) -> float:
        """The serving work of scoring one (request, candidate) pair, in millions of FLOPs:
        what the latency model charges the L2 stage per candidate (:mod:`sim.serving.latency`)."""
        return self._pair_mflops

    def inputs(self, user_x: torch.Tensor, surface_x: torch.Tensor,
               ad_x: torch.Tensor) -> torch.Tensor:
        """Aligned rows (N, .) of user features, surface one-hot and ad features -> (N, width)."""
        d = self.latent_dim
        cross = user_x[:, :d] * ad_x[:, :d]
        return torch.cat([user_x, surface_x, ad_x, cross], dim=1)

    def forward(self, x: torch.Tensor, position: torch.Tensor | None = None) -> torch.Tensor:
        """(N, width) -> (N, 2) logits of (pCTR, pCVR); ``position`` (N,) adds the slot bias."""
        with few_rows_on_one_thread(x.shape[0]):
            out = self.net(self.norm(x))
        if position is None:
            return out
        bias = (self.position_bias - self.position_bias[0])[position]
        return torch.stack([out[:, 0] + bias, out[:, 1]], dim=1)

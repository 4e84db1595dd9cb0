"""Building an L1 two-tower model of a named family for a world's feature layout."""

from __future__ import annotations

import torch
from torch import nn

from sim.config.schema import Config
from sim.features.registry import column_mask
from sim.models.dhen import DhenTwoTower
from sim.models.towers import TwoTower, TwoTowerBase
from sim.world.catalog import family_slices

L1Model = TwoTowerBase


def query_slices(cfg: Config) -> list[slice]:
    """Query-tower input tokens: user latent view, segment one-hot, surface one-hot."""
    d, k, s = cfg.world.latent_dim, cfg.world.n_segments, len(cfg.world.surfaces)
    return [slice(0, d), slice(d, d + k), slice(d + k, d + k + s)]


def item_slices(cfg: Config) -> list[slice]:
    """Item-tower input tokens: one per ad feature family."""
    return list(family_slices(cfg.world.latent_dim).values())


def make_l1(family: str, cfg: Config) -> L1Model:
    """A freshly initialised L1 model of ``family`` (``simple`` or ``dhen``) whose item tower
    sees the families of ``models.l1_features``."""
    m = cfg.models
    qs, its = query_slices(cfg), item_slices(cfg)
    model: L1Model
    if family == "simple":
        model = TwoTower(qs[-1].stop, its[-1].stop, m.embedding_dim, m.l1_hidden)
    elif family == "dhen":
        model = DhenTwoTower(qs, its, m.embedding_dim, m.dhen_token_dim, m.dhen_layers,
                             m.dhen_heads, m.dhen_layer_norm)
    else:
        raise ValueError(f"`models.l1_family` must be one of ['simple', 'dhen'], got {family!r}")
    view = column_mask(set(m.l1_features), family_slices(cfg.world.latent_dim))
    model.set_item_view(torch.from_numpy(view))
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

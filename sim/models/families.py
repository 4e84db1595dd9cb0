"""Building an L1 two-tower model of a named family for a world's feature layout.

**The L1 family protocol.** A family is a subclass of :class:`sim.models.towers.TwoTowerBase`,
named in the config (``models.l1_family``, ``readiness.families``) by one of the built-in names
(``simple``, ``dhen``) or by its import path ``package.module:Class``. It defines:

* ``from_config(query_slices, item_slices, models)`` (a classmethod): a freshly initialised model
  for this world. ``query_slices`` are the query tower's input tokens (the user's latent view, the
  segment one-hot, in a world with bots the user's log request rate, the surface one-hot: three
  or four tokens), ``item_slices`` the item tower's (one per ad feature
  family, :func:`sim.world.catalog.family_slices`); the last slice of each ends at the input's
  width. ``models`` is the ``models`` config (``embedding_dim`` D, and any sizes of its own);
* the modules ``query_norm`` and ``item_norm`` (:class:`~sim.models.towers.Standardize` of each
  input width: training fits them, serving applies them), ``query_tower`` (inputs -> D) and
  ``item_tower`` (inputs -> D + 1: the vector and its bias slot), and the ``item_view`` buffer
  (ones of the item input width; :func:`make_l1` sets the feature view);
* ``query_mflops()``: the work of one request's query vector, in millions of FLOPs, which the
  latency model charges (:mod:`sim.serving.latency`);
* ``family``: a short name for logs.

The base class does the rest: the query vector with a constant 1 appended, so the L1 logit is
one inner product and the faiss score; the pair score ``forward``; serving in reduced precision
(:mod:`sim.serving.precision`). Releases warm-start a family by continuing to train the previous
version's parameters on the new window (:func:`sim.models.fitting.fit_l1`), so a family needs
no code of its own for that. ``examples/wide_tower.py`` is a third family.
"""

from __future__ import annotations

import torch
from torch import nn

from sim.config.schema import L1_FAMILIES, Config
from sim.features.registry import column_mask
from sim.models.dhen import DhenTwoTower
from sim.models.towers import TwoTower, TwoTowerBase
from sim.plugins import load_object
from sim.world.catalog import family_slices

L1Model = TwoTowerBase


USER_TOKENS = ("latent", "segment", "request_rate")  # the query tokens before the surface


def query_view(cfg: Config) -> torch.Tensor:
    """(query width,) float32: 1 on the columns of the user tokens of ``models.l1_user_features``
    and of the surface, 0 elsewhere (``request_rate`` has a column only in a world with bots)."""
    slices = query_slices(cfg)
    names = [*USER_TOKENS[:len(slices) - 1], "surface"]  # request_rate only with bots
    mask = torch.zeros(slices[-1].stop)
    for name, sl in zip(names, slices, strict=True):
        if name == "surface" or name in cfg.models.l1_user_features:
            mask[sl] = 1.0
    return mask


def query_slices(cfg: Config) -> list[slice]:
    """Query-tower input tokens: user latent view, segment one-hot, (in a world with bots) the
    user's log request rate, surface one-hot."""
    d, k, s = cfg.world.latent_dim, cfg.world.n_segments, len(cfg.world.surfaces)
    r = 1 if cfg.world.bot_share > 0 else 0
    rate = [slice(d + k, d + k + r)] if r else []
    return [slice(0, d), slice(d, d + k), *rate, slice(d + k + r, d + k + r + s)]


def item_slices(cfg: Config) -> list[slice]:
    """Item-tower input tokens: one per ad feature family."""
    return list(family_slices(cfg.world.latent_dim).values())


BUILTIN: dict[str, type[TwoTowerBase]] = {"simple": TwoTower, "dhen": DhenTwoTower}
assert tuple(BUILTIN) == L1_FAMILIES


def family_class(family: str, key: str = "models.l1_family") -> type[TwoTowerBase]:
    """The class of ``family``: a built-in name or an import path of a TwoTowerBase subclass."""
    if family in BUILTIN:
        return BUILTIN[family]
    cls = load_object(family, key)
    if not (isinstance(cls, type) and issubclass(cls, TwoTowerBase)):
        raise ValueError(f"`{key}` {family!r} is not a subclass of sim.models.towers.TwoTowerBase")
    return cls


def make_l1(family: str, cfg: Config) -> L1Model:
    """A freshly initialised L1 model of ``family`` (see the protocol above) whose item tower
    sees the families of ``models.l1_features`` and whose query tower the user tokens of
    ``models.l1_user_features``."""
    m = cfg.models
    model = family_class(family).from_config(query_slices(cfg), item_slices(cfg), m)
    if not isinstance(model, TwoTowerBase):
        raise TypeError(f"{family}.from_config returned {type(model).__name__}, not a TwoTowerBase")
    view = column_mask(set(m.l1_features), family_slices(cfg.world.latent_dim))
    model.set_item_view(torch.from_numpy(view))
    model.set_query_view(query_view(cfg))
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

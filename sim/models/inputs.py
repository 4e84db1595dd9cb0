"""Model inputs assembled from the users and the catalog (what the serving stack and the
training jobs observe)."""

from __future__ import annotations

import numpy as np

from sim.world.users import Users


def surface_onehot(surface: np.ndarray, n_surfaces: int) -> np.ndarray:
    """(B,) surface codes -> (B, n_surfaces) float32 one-hot."""
    return np.eye(n_surfaces, dtype=np.float32)[surface]


def query_inputs(users: Users, user: np.ndarray, surface: np.ndarray,
                 n_surfaces: int) -> np.ndarray:
    """Query-tower input per request: user features and surface one-hot, (B, Fu + n_surfaces)."""
    return np.concatenate([users.features[user], surface_onehot(surface, n_surfaces)], axis=1)

"""Small numerical helpers shared by the world and the serving stack."""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function in float64, elementwise. Below -709, ``exp(-x)`` overflows to inf
    and the result is exactly 0, the limit (a barely trained tower's first logits can be that
    large): numpy's overflow warning is silenced here, not the value changed."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 2-D array and, for every row, the index of its distinct row:
    ``unique[inverse] == x``. Rows compare by their bytes (a sort of fixed-width byte strings,
    much faster than ``np.unique(axis=0)``)."""
    x = np.ascontiguousarray(x)
    keys = x.view(np.dtype((np.void, x.shape[1] * x.itemsize))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return x[first], inverse.ravel()

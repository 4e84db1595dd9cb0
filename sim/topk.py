"""Top-k selection over rows of a (rows x columns) array, with one documented tie rule.

Every ranking in the simulator (the merge of index tiers, L1's and L2's cuts, the auction) goes
through :func:`top_k`, so "ties go to the lower column" holds everywhere: among equal values the
candidate in the lower column ranks first, also across the boundary of the ``k`` kept.
"""

from __future__ import annotations

import numpy as np


def take(a: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``a[i, cols[i, j]]`` for (B, n) ``a`` and (B, m) ``cols``: ``np.take_along_axis`` along
    rows, by one flat gather (a few times faster at these shapes)."""
    flat = cols + (np.arange(cols.shape[0], dtype=np.int64) * a.shape[1])[:, None]
    return np.take(a, flat)


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Columns of the ``k`` largest values of each row of (B, n) ``values``, best first; (B, k).

    Ties go to the lower column, exactly: a partition picks the ``k``-th largest value of each
    row, every column above it is kept, and of the columns equal to it the lowest ones fill the
    remaining places; a stable sort then orders the kept columns by value. NaN ranks as ``-inf``.
    Requires ``1 <= k``; with ``k >= n`` every column is returned, ordered.
    """
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}")
    if np.isnan(values).any():
        values = np.where(np.isnan(values), -np.inf, values)
    b, n = values.shape
    if k < n:
        kth = -np.partition(-values, k - 1, axis=1)[:, k - 1:k]  # (B, 1) k-th largest value
        above = values > kth
        tied = values == kth
        room = k - above.sum(axis=1, keepdims=True)  # places left for the tied columns
        keep = above | (tied & (np.cumsum(tied, axis=1) <= room))
        part = np.nonzero(keep)[1].reshape(b, k)  # exactly k per row, in column order
    else:
        part = np.broadcast_to(np.arange(n), values.shape).copy()
    key = np.argsort(-take(values, part), axis=1, kind="stable")
    return take(part, key)

"""Small numerical helpers shared by the world and the serving stack."""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function in float64, elementwise."""
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))

"""Confidence intervals for ratio metrics with user-level clustering (the delta method).

A ratio metric R = sum_u Y_u / sum_u X_u over users u (CPA = spend / conversions, spend per
request, ...). Users are the independent units (a user's requests are correlated), so the
variance is taken over per-user totals: with n users, means (x̄, ȳ) and sample (co)variances,

    Var(R) ~= (s_yy - 2 R s_xy + R^2 s_xx) / (n x̄^2)

The relative lift of treatment over control is exp(L) - 1 with L = ln(R_t / R_c) and
Var(L) ~= Var(R_t)/R_t^2 + Var(R_c)/R_c^2 (the arms' users are disjoint samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Ratio:
    estimate: float
    variance: float
    users: int

    def interval(self) -> dict[str, float | None]:
        sd = float(np.sqrt(self.variance))
        return {"estimate": self.estimate, "low": self.estimate - Z95 * sd,
                "high": self.estimate + Z95 * sd}


def ratio(y: np.ndarray, x: np.ndarray) -> Ratio | None:
    """The ratio sum(y) / sum(x) of per-user totals and its delta-method variance."""
    y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    if y.shape != x.shape or y.ndim != 1:
        raise ValueError(f"`y` and `x` must be 1-D of one shape, got {y.shape} and {x.shape}")
    n = y.size
    if n < 2 or x.sum() <= 0:
        return None
    r = y.sum() / x.sum()
    c = np.cov(np.vstack([y, x]))
    var = (c[0, 0] - 2 * r * c[0, 1] + r * r * c[1, 1]) / (n * x.mean() ** 2)
    return Ratio(float(r), float(max(var, 0.0)), n)


def lift(treatment: Ratio | None, control: Ratio | None) -> dict[str, float | None] | None:
    """Relative lift of treatment over control with its 95% interval (None if undefined)."""
    if treatment is None or control is None or treatment.estimate <= 0 or control.estimate <= 0:
        return None
    log_lift = np.log(treatment.estimate / control.estimate)
    sd = np.sqrt(treatment.variance / treatment.estimate**2 + control.variance / control.estimate**2)
    return {"estimate": float(np.expm1(log_lift)), "low": float(np.expm1(log_lift - Z95 * sd)),
            "high": float(np.expm1(log_lift + Z95 * sd))}

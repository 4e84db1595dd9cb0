"""The direct fits of ``python -m sim.calibrate``: the knobs a statistic reads without the
simulator in between, fitted in closed form or by a small least-squares problem, with no world
run (the emergent ones go through worlds: :mod:`sim.emergent_fit`).

* the 24 ``hour_share_<h>`` → ``traffic.hourly_shares`` (normalised to sum to 1);
* ``budget_target_corr`` → ``world.budget_target_corr``: for the lognormal draws the log-log
  correlation *is* the knob;
* the delay shares (``delay_within_1h``, ``_24h``, ``_7d``, ``_30d``) → a two-component lognormal
  ``world.conversion_delay`` under ``world.attribution_window_s`` (:func:`fit_delay`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from sim.market_stats import DELAY_SHARES
from sim.world.delay import ConversionDelay

FAST_SIGMA, SLOW_SIGMA = 1.2, 1.5  # the delay components' shapes, held fixed
FAST_MEDIAN_S = 900.0  # the fast component's median where the shares cannot identify it
BOUNDS = {"slow_weight": (0.01, 0.99), "slow_median_s": (3600.0, 60 * 86_400.0),
          "fast_median_s": (30.0, 6 * 3600.0)}
WINDOW_S = 30 * 86_400.0  # the attribution window delay shares are read under, unless given
REACH = 0.01  # a direct fit that misses a target share by more than this has not reached it


@dataclass(frozen=True, kw_only=True)
class Fit:
    """One direct fit: the overlay keys it sets, the statistics it read, the knobs it fitted
    and those it held (not identifiable from the statistics given), and the fitted world's value
    of each statistic it read."""

    overlay: dict[str, Any]
    read: tuple[str, ...]
    fitted: dict[str, float] = field(default_factory=dict)
    held: dict[str, float] = field(default_factory=dict)
    reproduced: dict[str, float] = field(default_factory=dict)
    reached: bool = True  # every target reproduced within REACH


def finite_number(x: Any) -> bool:
    """A real, finite number (not a bool)."""
    return not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x)


def target_values(targets: dict[str, Any]) -> dict[str, float]:
    """``{name: value}`` from a targets file's ``statistics`` (a number, or ``{value, sd}`` with
    ``sd`` > 0: recorded in ``fit.json``; the direct fits are exact and do not weigh it)."""
    out: dict[str, float] = {}
    for name, t in targets.items():
        v = t.get("value") if isinstance(t, dict) else t
        extra = set(t) - {"value", "sd"} if isinstance(t, dict) else set()
        sd = t.get("sd") if isinstance(t, dict) else None
        bad_sd = sd is not None and not (finite_number(sd) and sd > 0)
        if v is None or not finite_number(v) or extra or bad_sd:
            raise ValueError(f"statistic `{name}`: a finite number or {{value, sd > 0}}, got {t!r}")
        out[name] = float(v)
    return out


def fit_delay(shares: dict[str, float], window_s: float = WINDOW_S) -> Fit:
    """A two-component lognormal delay mixture whose shares of attributed conversions within each
    delay, ``F(t) / F(W)`` for the attribution window W = ``window_s`` (what
    :func:`sim.market_stats.statistics` measures), pass through ``shares`` (statistic name ->
    share; a share at a delay of W or more is 1 by definition and is not read). The slow
    component's weight and median are fitted; the fast component's median only when the 1-hour
    share is given beside two others (it is what pins it), else held at :data:`FAST_MEDIAN_S`.
    A fit that misses a target by more than :data:`REACH` says so (``reached``)."""
    read = {k: v for k, v in shares.items() if DELAY_SHARES[k] < window_s}
    if len(read) < 2:
        raise ValueError(f"a delay fit needs at least two delay shares at delays under the "
                         f"attribution window ({window_s:g} s), got {sorted(shares)}")
    names_by_t = sorted(read, key=lambda k: DELAY_SHARES[k])
    ys = np.array([read[k] for k in names_by_t])
    ts = np.array([DELAY_SHARES[k] for k in names_by_t])
    if np.any(np.diff(ys) < 0) or np.any((ys <= 0) | (ys >= 1)):
        raise ValueError("delay shares must lie in (0, 1) and grow with the delay, got "
                         + ", ".join(f"{k} {read[k]}" for k in names_by_t))
    names = ["slow_weight", "slow_median_s"]
    if "delay_within_1h" in read and len(read) >= 3:
        names.append("fast_median_s")
    start = {"slow_weight": float(np.clip(1.0 - ys[0], *BOUNDS["slow_weight"])),
             "slow_median_s": 5 * 86_400.0, "fast_median_s": FAST_MEDIAN_S}

    def delay(p: dict[str, float]) -> ConversionDelay:
        return ConversionDelay(kind="lognormal", weights=(1.0 - p["slow_weight"], p["slow_weight"]),
                               medians_s=(p["fast_median_s"], p["slow_median_s"]),
                               sigmas=(FAST_SIGMA, SLOW_SIGMA))

    def params(x: np.ndarray) -> dict[str, float]:
        p = dict(start)
        for n, v in zip(names, x, strict=True):
            p[n] = float(v) if n == "slow_weight" else float(math.exp(v))
        return p

    def attributed(d: ConversionDelay, t: np.ndarray) -> np.ndarray:
        return np.asarray(d.cdf(t)) / float(d.cdf(window_s))

    x0 = [start[n] if n == "slow_weight" else math.log(start[n]) for n in names]
    lo = [BOUNDS[n][0] if n == "slow_weight" else math.log(BOUNDS[n][0]) for n in names]
    hi = [BOUNDS[n][1] if n == "slow_weight" else math.log(BOUNDS[n][1]) for n in names]
    res = least_squares(lambda x: attributed(delay(params(x)), ts) - ys, x0, bounds=(lo, hi))
    p = params(res.x)
    d = delay(p)
    got = dict(zip(names_by_t, attributed(d, ts).tolist(), strict=True))
    overlay = {"world": {"conversion_delay": "lognormal",
                         "conversion_delay_weights": [round(1.0 - p["slow_weight"], 6),
                                                      round(p["slow_weight"], 6)],
                         "conversion_delay_medians_s": [round(p["fast_median_s"], 3),
                                                        round(p["slow_median_s"], 3)],
                         "conversion_delay_sigmas": [FAST_SIGMA, SLOW_SIGMA],
                         "attribution_window_s": window_s}}
    return Fit(overlay=overlay, read=tuple(names_by_t),
               fitted={n: p[n] for n in names},
               held={n: p[n] for n in ("fast_median_s",) if n not in names},
               reproduced=got,
               reached=all(abs(got[k] - read[k]) <= REACH for k in read))


def fit_hourly(shares: dict[str, float]) -> Fit:
    """``traffic.hourly_shares`` from all 24 ``hour_share_<h>`` (normalised)."""
    missing = [h for h in range(24) if f"hour_share_{h}" not in shares]
    if missing:
        raise ValueError(f"hourly shares need all 24 hours; missing hours {missing}")
    v = np.array([shares[f"hour_share_{h}"] for h in range(24)])
    if np.any(v < 0) or v.sum() <= 0:
        raise ValueError(f"hourly shares must be >= 0 with a positive sum, got {v.tolist()}")
    v = v / v.sum()
    return Fit(overlay={"traffic": {"hourly_shares": [round(float(x), 8) for x in v]}},
               read=tuple(f"hour_share_{h}" for h in range(24)),
               fitted={f"hourly_shares[{h}]": float(x) for h, x in enumerate(v)},
               reproduced={f"hour_share_{h}": float(x) for h, x in enumerate(v)})


def fit_corr(corr: float) -> Fit:
    """``world.budget_target_corr``: the log-log correlation of the lognormal draws is the knob."""
    if not -1.0 <= corr <= 1.0:
        raise ValueError(f"budget_target_corr must lie in [-1, 1], got {corr}")
    return Fit(overlay={"world": {"budget_target_corr": corr}}, read=("budget_target_corr",),
               fitted={"budget_target_corr": corr}, reproduced={"budget_target_corr": corr})


def fit_direct(values: dict[str, float], window_s: float = WINDOW_S) -> list[Fit]:
    """Every direct fit the statistics in ``values`` allow (see the module docstring); delay
    shares are read under the attribution window ``window_s``."""
    fits = []
    delays = {k: v for k, v in values.items() if k in DELAY_SHARES}
    if delays:
        fits.append(fit_delay(delays, window_s))
    hours = {k: v for k, v in values.items() if k.startswith("hour_share_")}
    if hours:
        fits.append(fit_hourly(hours))
    if "budget_target_corr" in values:
        fits.append(fit_corr(values["budget_target_corr"]))
    return fits


def merged_overlay(fits: list[Fit]) -> dict[str, Any]:
    """The fits' overlays as one (each sets its own keys)."""
    out: dict[str, Any] = {}
    for f in fits:
        for group, keys in f.overlay.items():
            out.setdefault(group, {}).update(keys)
    return out

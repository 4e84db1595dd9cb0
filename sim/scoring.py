"""Scoring probability predictions (the offline metrics): pure functions, the teaching API.

Argument order: every metric of labels against predictions takes ``(y, p)``, labels first, as
scikit-learn's ``(y_true, y_pred)``; ``log_mae(p, teacher)`` compares two predictions.
Shapes: ``y`` and ``p`` are 1-D arrays of equal length N; ``y`` holds 0/1 labels and ``p``
probabilities in (0, 1). Probabilities are clipped to ``[eps, 1 - eps]`` (``eps = 1e-7``) before
a logarithm is taken. Every function raises ``ValueError`` naming the argument on bad input.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def _arrays(y: np.ndarray | None, p: np.ndarray, name_p: str = "p") -> tuple[np.ndarray, ...]:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"`{name_p}` must be a non-empty 1-D array, got shape {p.shape}")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"`{name_p}` must hold probabilities in [0, 1]")
    if y is None:
        return (p,)
    y = np.asarray(y, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"`y` must have the shape of `{name_p}` {p.shape}, got {y.shape}")
    if np.any((y != 0) & (y != 1)):
        raise ValueError("`y` must hold 0/1 labels")
    return y, p


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy ``-mean(y ln p + (1 - y) ln(1 - p))``, nats per example."""
    y, p = _arrays(y, p)
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def normalized_entropy(y: np.ndarray, p: np.ndarray) -> float:
    """Log loss divided by the entropy of the base rate (He et al., 2014). 1 = no better than
    predicting the observed base rate; lower is better. Raises if the labels are all 0 or all 1."""
    y, p = _arrays(y, p)
    rate = y.mean()
    if rate in (0.0, 1.0):
        raise ValueError("`y` must contain both classes for normalized entropy")
    base = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    return log_loss(y, p) / float(base)


def calibration_ratio(y: np.ndarray, p: np.ndarray) -> float:
    """``sum(p) / sum(y)``: predicted over observed positives (1 = calibrated, > 1 = over)."""
    y, p = _arrays(y, p)
    if y.sum() == 0:
        raise ValueError("`y` has no positives; the calibration ratio is undefined")
    return float(p.sum() / y.sum())


def log_mae(p: np.ndarray, teacher: np.ndarray) -> float:
    """``mean |ln p - ln teacher|``: the L1 distillation metric against the L2 teacher's pCVR."""
    (p,) = _arrays(None, p)
    (t,) = _arrays(None, teacher, "teacher")
    if t.shape != p.shape:
        raise ValueError(f"`teacher` must have the shape of `p` {p.shape}, got {t.shape}")
    return float(np.mean(np.abs(np.log(np.clip(p, EPS, 1)) - np.log(np.clip(t, EPS, 1)))))


def row_log_error(p: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """Each row's ``|ln p - ln teacher|``: its contribution to :func:`log_mae`."""
    return np.abs(np.log(np.clip(p, EPS, 1)) - np.log(np.clip(teacher, EPS, 1)))


def win_concentration(control: np.ndarray, treatment: np.ndarray, trim: float,
                      flag: np.ndarray | None = None,
                      group: np.ndarray | None = None) -> dict[str, float | None]:
    """How much of an offline win a few rows carry: ``control`` and ``treatment`` are the two
    models' per-row losses on the same rows (e.g. :func:`row_log_error`).

    * ``win``: ``1 - sum(treatment) / sum(control)``, the relative fall of the mean loss;
    * ``win_trimmed``: the same without the ``trim`` share of rows with the largest loss of either
      model (the large-loss samples);
    * ``top_share``: the share of the win's numerator, ``sum(control - treatment)``, that the
      ``trim`` share of rows with the largest contribution carry (above 1 when the other rows,
      together, lose).

    An undefined value (a zero denominator) is None.

    ``group`` (an id per row, such as the user) adds ``win_trimmed_groups``: the win without the
    rows of the ``trim`` share of groups with the largest total loss of either model (a few
    users with many rows: heavy users, bots), and ``top_groups_row_share``, the share of rows
    those groups hold.

    ``flag`` (bool per row, ground truth such as "the user is a bot") adds ``flag_share``, the
    flagged share of all rows, ``flag_share_trimmed``, of the trimmed ones, and
    ``win_unflagged``, the win on the unflagged rows alone.
    """
    c, t = np.asarray(control, np.float64), np.asarray(treatment, np.float64)
    if c.shape != t.shape or c.ndim != 1 or c.size == 0:
        raise ValueError(f"`control` and `treatment` must be equal non-empty 1-d arrays, got "
                         f"{c.shape} and {t.shape}")
    if not 0 < trim < 1:
        raise ValueError(f"`trim` must be in (0, 1), got {trim}")
    if not (np.isfinite(c).all() and np.isfinite(t).all()):
        raise ValueError("`control` and `treatment` must be finite losses")
    for name, a in (("flag", flag), ("group", group)):
        if a is not None and np.shape(a) != c.shape:
            raise ValueError(f"`{name}` must have the shape of the losses {c.shape}, got "
                             f"{np.shape(a)}")
    k = max(1, int(round(trim * c.size)))
    worst = np.argsort(np.maximum(c, t), kind="stable")[::-1][:k]
    keep = np.ones(c.size, bool)
    keep[worst] = False
    gain = c - t
    total = float(gain.sum())
    top = float(np.sort(gain)[::-1][:k].sum())

    def win(m: np.ndarray) -> float | None:
        return 1.0 - float(t[m].sum() / c[m].sum()) if m.any() and c[m].sum() > 0 else None

    out: dict[str, float | None] = {
        "win": win(np.ones(c.size, bool)), "win_trimmed": win(keep),
        "top_share": top / total if total != 0 else None, "trim": trim, "rows": int(c.size)}
    if group is not None:
        ids, of = np.unique(np.asarray(group), return_inverse=True)
        loss = np.maximum(np.bincount(of, c, ids.size), np.bincount(of, t, ids.size))
        heavy = np.argsort(loss, kind="stable")[::-1][:max(1, int(round(trim * ids.size)))]
        in_top = np.isin(of, heavy)
        out |= {"win_trimmed_groups": win(~in_top), "top_groups_row_share": float(in_top.mean()),
                "groups": int(ids.size)}
    if flag is not None:
        f = np.asarray(flag, bool)
        out |= {"flag_share": float(f.mean()), "flag_share_trimmed": float(f[worst].mean()),
                "win_unflagged": win(~f)}
    return out


def ece(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins of ``p`` on [0, 1]:
    ``sum_b (n_b / N) |mean(p in b) - mean(y in b)|``."""
    y, p = _arrays(y, p)
    if n_bins < 1:
        raise ValueError(f"`n_bins` must be >= 1, got {n_bins}")
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    n = np.bincount(b, minlength=n_bins)
    sp = np.bincount(b, weights=p, minlength=n_bins)
    sy = np.bincount(b, weights=y, minlength=n_bins)
    m = n > 0
    return float(np.sum(np.abs(sp[m] - sy[m])) / p.size)


def binary_entropy(rate: float) -> float:
    """Entropy of a Bernoulli(``rate``) variable in nats (0 at rate 0 or 1)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"`rate` must be in [0, 1], got {rate}")
    if rate in (0.0, 1.0):
        return 0.0
    return float(-(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)))


def cross_entropy(q: np.ndarray, p: np.ndarray) -> float:
    """Mean ``-(q ln p + (1 - q) ln(1 - p))`` for soft targets ``q`` in [0, 1]: the expected log
    loss of ``p`` when the outcome is drawn with probability ``q`` (nats per example)."""
    (q,) = _arrays(None, q, "q")
    (p,) = _arrays(None, p)
    if q.shape != p.shape:
        raise ValueError(f"`q` must have the shape of `p` {p.shape}, got {q.shape}")
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(q * np.log(p) + (1 - q) * np.log1p(-p)))

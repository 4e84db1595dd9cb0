"""How the report writes numbers: percentages, a lift with its interval, a minimum detectable
effect, a plain number (n/a where undefined). Pure functions, shared by the verdicts and the
document."""

from __future__ import annotations

import math


def pct(x: float | None, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def interval(iv: dict[str, float | None] | None) -> str:
    """A lift as 'estimate (low … high)', the estimate alone without an interval, or n/a."""
    if not iv or iv.get("estimate") is None:
        return "n/a"
    if iv.get("low") is None:
        return pct(iv["estimate"])
    return f"{pct(iv['estimate'])} ({pct(iv['low'])} … {pct(iv['high'])})"


def detectable(iv: dict[str, float | None] | None) -> str:
    """A lift's minimum detectable effect as '+x% / −y%' (an increase / a decrease), or n/a."""
    mde = (iv or {}).get("mde")
    if mde is None or not math.isfinite(mde):
        return "n/a"
    return f"{pct(mde)} / {pct(1.0 / (1.0 + mde) - 1.0)}"


def num(x: float | None) -> str:
    """A number to four decimals, or n/a."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"

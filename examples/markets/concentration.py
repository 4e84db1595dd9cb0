"""How many advertisers carry a world's conversions.

    python examples/markets/concentration.py RUN_DIR [RUN_DIR ...]

prints one JSON line per run: its CTR and CVR (:func:`sim.market_stats.statistics`), and for the
conversions of its clicks, by advertiser, the top advertiser's share, the top five's and the
effective number of advertisers (1 / the sum of squared shares), twice:

* ``expected``: each click counts its true conversion probability (``clicks.true_pcvr``, ground
  truth no model saw): what the world's selection delivered, without the counting of a few
  hundred conversions;
* ``attributed``: the attributed conversions themselves (what a platform's own logs give).

A world whose conversions come from a handful of advertisers has a conversion rate that is a
handful of advertisers' rates: which of them the models and the auction let win moves it from run
to run however many requests the run serves. docs/calibration.md ("How many advertisers carry
the rate") measured the feed preset with it. Also prints, by objective, the share of
advertiser-days (``budget_days`` rows: per arm under an experiment) that spent anything and the
median share of its budget an advertiser-day spent. A share with nothing to share (no clicks, no
conversions) is ``null``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl

from sim.market_stats import read_logs, statistics


def shares(weights: pl.DataFrame, column: str) -> dict[str, float | None]:
    """Top-1 and top-5 shares of ``column`` summed by advertiser, and 1 / sum of squared shares."""
    by = weights.group_by("advertiser_id").agg(pl.col(column).sum()).get_column(column).to_numpy()
    total = float(by.sum())
    if total <= 0:
        return {"top1": None, "top5": None, "effective": None}
    s = np.sort(by / total)[::-1]
    return {"top1": round(float(s[0]), 3), "top5": round(float(s[:5].sum()), 3),
            "effective": round(float(1.0 / (s**2).sum()), 1)}


def concentration(run_dir: Path) -> dict[str, object]:
    logs = read_logs(run_dir)
    stats = statistics(logs)
    clicks = pl.read_parquet(run_dir / "logs" / "clicks.parquet")
    conv = logs["conversions"].filter(pl.col("attributed")).with_columns(pl.lit(1.0).alias("n"))
    days = logs["budget_days"].filter(pl.col("budget") > 0).with_columns(
        (pl.col("spend") / pl.col("budget")).alias("used"))
    spend = days.group_by("objective").agg(
        (pl.col("spend") > 0).mean().round(3).alias("spending"),
        pl.col("used").median().round(3).alias("median_used")).sort("objective")
    return {
        "run": str(run_dir), "ctr": stats["ctr"], "cvr": stats["cvr"],
        "expected_conversions": round(float(clicks["true_pcvr"].sum()), 1),
        "expected": shares(clicks, "true_pcvr"),
        "attributed_conversions": conv.height,
        "attributed": shares(conv, "n"),
        "advertiser_days_spending": {r["objective"]: r["spending"]
                                     for r in spend.iter_rows(named=True)},
        "median_budget_used": {r["objective"]: r["median_used"]
                               for r in spend.iter_rows(named=True)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories (each with logs/)")
    runs = p.parse_args().runs
    for run in runs:  # every directory checked before any is read
        missing = [f"{n}.parquet" for n in ("clicks", "conversions", "budget_days", "impressions")
                   if not (run / "logs" / f"{n}.parquet").exists()]
        if missing:
            p.error(f"{run} is not a finished run directory (logs/ lacks {', '.join(missing)})")
    for run in runs:
        print(json.dumps(concentration(run)))


if __name__ == "__main__":
    main()

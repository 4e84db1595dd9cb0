"""When the run's churn touches one catalogue slot: a feature refresh or a replacement.

    python examples/markets/churn_watch.py SLOT SEED [key=value ...] [--scenario market_feed]

runs SCENARIO at SEED in this process (one torch and one faiss thread, into a temporary
directory) and prints one JSON line per churn event of catalogue slot SLOT (an initial ad's slot
is its ad id): ``refresh`` (the ad's observed features re-drawn, its latent state kept:
``world.feature_refresh_per_day``) with the size of the change, or ``replace`` (the ad expired and
a new ad of the same advertiser took the slot), then a last line with the world's CTR and CVR
(:func:`sim.market_stats.statistics`). The churn's two functions are wrapped, not changed: the
world is the one ``python -m sim`` runs at the same settings. docs/calibration.md ("How many
advertisers carry the rate") found with it that at seed 111 of the feed preset the run's churn
re-draws the features of the ad that carries the world's conversions while it is paced out.

Not part of the package: it replaces names in :mod:`sim.world.marketplace` in this process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import sim.world.marketplace as marketplace


def watch(slot: int, events: list[dict[str, Any]]) -> None:
    """Wrap the churn's refresh and replacement so that each touch of ``slot`` is appended to
    ``events``."""
    refresh, replace = marketplace.refresh_features, marketplace.replace_ads

    def refreshed(cat: Any, now: float, *args: Any) -> np.ndarray:
        before = cat.features[slot].copy()
        slots = refresh(cat, now, *args)
        if slot in set(slots.tolist()):
            events.append({"event": "refresh", "time": now, "ad_id": int(cat.ad_id[slot]),
                           "change": round(float(np.linalg.norm(cat.features[slot] - before)), 3)})
        return slots

    def replaced(cat: Any, now: float, *args: Any) -> np.ndarray:
        old = int(cat.ad_id[slot])
        slots = replace(cat, now, *args)
        if slot in set(slots.tolist()):
            events.append({"event": "replace", "time": now, "ad_id": old,
                           "new_ad_id": int(cat.ad_id[slot])})
        return slots

    marketplace.refresh_features = refreshed  # type: ignore[assignment]
    marketplace.replace_ads = replaced  # type: ignore[assignment]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("slot", type=int)
    p.add_argument("seed", type=int)
    p.add_argument("overrides", nargs="*", help="key=value settings of the world")
    p.add_argument("--scenario", default="market_feed")
    a = p.parse_intermixed_args()
    from hydra.errors import HydraException

    from sim.api import simulate_config
    from sim.config import ConfigError, load_config
    from sim.market_stats import read_logs, statistics

    try:  # bad settings stop here, before the world is built
        cfg = load_config(a.scenario, [f"seed={a.seed}", "threads.torch=1", "threads.faiss=1",
                                       "progress=off", *a.overrides])
    except (ConfigError, HydraException) as exc:
        p.error(str(exc).strip())
    slots = cfg.world.n_advertisers * cfg.world.ads_per_advertiser
    if not 0 <= a.slot < slots:  # a negative index would silently watch another slot
        p.error(f"SLOT {a.slot}: the catalogue has slots 0-{slots - 1} "
                f"(world.n_advertisers x world.ads_per_advertiser)")
    events: list[dict[str, Any]] = []
    watch(a.slot, events)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        simulate_config(cfg, a.scenario, run_dir)
        stats = statistics(read_logs(run_dir))
    for e in events:
        print(json.dumps(e))
    print(json.dumps({"ctr": stats["ctr"], "cvr": stats["cvr"]}))


if __name__ == "__main__":
    main()

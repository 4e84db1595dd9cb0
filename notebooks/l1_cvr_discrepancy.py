# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # The retrospective in one world: diagnose it layer by layer
#
# The notebook form of the headline lesson, `scenarios/l1_cvr_discrepancy.md`: a `dhen` L1 that
# reads the offsite counters against production's `simple`, a parity gap in the L1 embedding
# path, version skew from streaming builds, a 20% -> 45% -> 70% ramp and pooled training. The
# lesson gives the numbers across five seeds; here is one world, read the way the report reads
# it: the gap, then each layer's hypotheses, then the retrospective point by point.
#
# A full-size world takes about two minutes on two cores.

# %%
import polars as pl

from sim import simulate

OVERRIDES = globals().get("OVERRIDES", {})  # the test suite gives a tiny world here
RUN_DIR = globals().get("RUN_DIR")

# %%
run = simulate("l1_cvr_discrepancy", seed=0, run_dir=RUN_DIR, **OVERRIDES)
run

# %% [markdown]
# ## Online lifts, pooled and within ramp steps

# %%
lift, strat = run.metrics.get("lift", {}), run.metrics.get("lift_stratified", {})
pl.DataFrame([{"metric": k, "pooled": (v or {}).get("estimate"),
               "within steps": (strat.get(k) or {}).get("estimate")} for k, v in lift.items()])

# %% [markdown]
# ## The verdicts, layer by layer

# %%
pl.DataFrame([{"layer": v.layer, "hypothesis": v.hypothesis, "status": v.status}
              for v in run.verdicts])

# %% [markdown]
# ## Where the served candidates came from
#
# Funnel recall per arm, and the serving path against the exact fp32 path.

# %%
pl.DataFrame([{"arm": arm, "retrieval_recall": a.get("retrieval_recall"),
               "ranking_recall": a.get("ranking_recall"), "ann_recall": a.get("ann_recall")}
              for arm, a in run.metrics["arms"].items()])

# %%
run.plot("cpa_daily")

# %% [markdown]
# The full report, with the retrospective point by point, is `run.report()`; attribution over
# the hazards present is `python -m sim.report RUN_DIR --attribute` (several worlds).

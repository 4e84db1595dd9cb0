# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Embedding version skew: where mixed versions come from
#
# The notebook form of `scenarios/version_skew.md`. Daily releases; the query tower rolls out an
# hour after each; the `large` index tier takes two days to build and deploy, and in `streaming`
# mode enrichment writes each new or changed ad with whatever item tower is live. Compare the
# build modes: `streaming` (the scenario), `batch` (one version per build).
#
# A full-size world takes under two minutes on two cores; the two here take twice that, and the
# readiness check at the end about a minute more.

# %%
import polars as pl

from sim import simulate
from sim.readiness import check
from sim.results import to_json

OVERRIDES = globals().get("OVERRIDES", {})  # the test suite gives a tiny world here
RUN_DIR = globals().get("RUN_DIR")

# %%
runs = {mode: simulate("version_skew", seed=0, index={"build_mode": mode}, **OVERRIDES,
                       logs={"training_rows": mode == "streaming"},  # for the readiness check
                       run_dir=None if RUN_DIR is None else f"{RUN_DIR}/{mode}")
        for mode in ("streaming", "batch")}

# %% [markdown]
# ## What was served: the version distance of each retrieved candidate

# %%
shares = {mode: r.metrics["arms"]["control"]["version_distance"]["all"] for mode, r in runs.items()}
pl.DataFrame([{"mode": m, "distance": int(d), "share": s} for m, by in shares.items()
              for d, s in by.items()]).pivot(on="mode", index="distance").sort("distance")

# %%
runs["streaming"].plot("version_distance")

# %% [markdown]
# ## What skew costs: the offline sweep and the readiness gate
#
# The sweep pairs each query tower with item towers 1, 2, ... versions older on the same rows.

# %%
sweep = runs["streaming"].logs["skew_sweep"].collect()
sweep.filter(pl.col("source") == "all") if "source" in sweep.columns else sweep

# %%
runs["streaming"].metrics["offline"].get("skew_gate")

# %%
[(mode, v.key, v.finding) for mode, r in runs.items() for v in r.verdicts if v.key == "version_skew"]

# %% [markdown]
# ## Would another family survive this pipeline? The readiness check
#
# `sim.readiness.check` replays the streaming world's releases from its training logs with the
# families you name trained beside production's, and sweeps them, without serving anything
# (`python -m sim.readiness` on the command line; `docs/readiness.md`). A family the run checked
# gets the run's sweep to the bit; a family of your own is a `package.module:Class` path.

# %%
ready = check(["dhen", "simple"], runs["streaming"].run_dir, runs["streaming"].run_dir / "readiness")
print(ready.table())
assert to_json(ready.sweep) == runs["streaming"].metrics["offline"]["skew_sweep"]  # to the bit

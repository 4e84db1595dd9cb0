# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Parity gap: a feature in the training logs that serving never sees
#
# The notebook form of the lesson `scenarios/parity_gap.md` (its figures, its exercises and why
# the mechanism does what it does are there). The offsite conversion counters are onboarded to
# the training logs and the L2 feature store, not to the path that builds the L1 item
# embeddings. The treatment's L1 reads them; production's does not.
#
# Open it with jupytext (`pip install jupytext`, then open this `.py` file as a notebook), or
# run it as a script. A full-size world takes about a minute on two cores.

# %%
import polars as pl

from sim import simulate

# the test suite runs every notebook on a tiny world by giving these (leave them empty here)
OVERRIDES = globals().get("OVERRIDES", {})
RUN_DIR = globals().get("RUN_DIR")

# %%
run = simulate("parity_gap", seed=0, run_dir=RUN_DIR, **OVERRIDES)
run

# %% [markdown]
# ## The gap: offline win, online change
#
# L1's log_mae against the L2 teacher, offline on the logged rows and online on what was served.

# %%
offline = {arm: m["sources"]["auction_winner"]["overall"]["log_mae"]
           for arm, m in run.metrics["offline"]["models"].items()}
online = {arm: a["l1_log_mae"] for arm, a in run.metrics["arms"].items()}
pl.DataFrame({"arm": list(offline), "offline log_mae": list(offline.values()),
              "online log_mae": [online[a] for a in offline]})

# %%
run.plot("gap")

# %% [markdown]
# ## The parity audit
#
# Coverage of each family in each artifact, offline against online, and how much each arm's L1
# leans on the family (its importance: the loss when it is zero-filled).

# %%
run.logs["parity_audit"].collect()

# %%
run.plot("coverage")

# %% [markdown]
# ## Verdicts
#
# Which hypotheses could alone explain the gap, by the report's rules.

# %%
[(v.key, v.status, v.finding) for v in run.verdicts if v.named]

# %% [markdown]
# The whole report (Markdown with its plots) is `run.report()`; in Jupyter it shows inline.

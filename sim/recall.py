"""Funnel recall: how much of what the downstream stages would have chosen L1 let through.

Computed after the run from the ``full_request`` log source (every live retrieved candidate of a
sampled request, with L2's utility ``l2_value`` and the true utility ``true_value`` — eCPM from
the true pCTR and pCVR with the same bid multiplier, `sim.bidding.actuators` — logged beside each):

* ``retrieval_recall``: of the auction winners computed as if L2 and the auction had seen every
  retrieved candidate (the top ``n_slots`` by L2 utility), the share that passed L1;
* ``ranking_recall``: of the top ``k_l1`` retrieved candidates by L2 utility, the share in L1's
  output;
* ``oracle_retrieval_recall``, ``oracle_ranking_recall``: the same against the true utility, the
  ceiling a perfect L2 would set;
* ``headroom_retrieval_recall``, ``headroom_ranking_recall``: the recalls of a counterfactual L1
  whose pCVR is L2's (same pCTR prior, bid and pacing: its utility is the logged L1 utility with
  L1's pCVR replaced by L2's for oCPM ads, the only ones whose utility has a pCVR), keeping the
  top ``k_l1``. What a better L1 *CVR model* could reach with this utility design: if the headroom
  is no higher than the recall, the funnel is at its ceiling for L1's pCVR; if it is higher and a
  better model does not move recall, the model's gain is not in the part of the error that ranks.

A request with fewer live candidates than the cut counts all of them. Ties in utility go to the
better retrieval rank. A low recall with a good L1 offline metric is the recall-ceiling question of
the retrospective: L1 can only change what it lets through.
"""

from __future__ import annotations

from typing import Any

import polars as pl

KEYS = ("retrieval_recall", "ranking_recall", "oracle_retrieval_recall", "oracle_ranking_recall",
        "headroom_retrieval_recall", "headroom_ranking_recall")


def _shares(full: pl.DataFrame, n_slots: int, k_l1: int) -> dict[str, float | None]:
    if full.height == 0:
        return dict.fromkeys(KEYS)
    teacher_value = pl.when(pl.col("objective") == "ocpm").then(
        pl.col("l1_value") * pl.col("l2_pcvr") / pl.col("l1_pcvr")).otherwise(pl.col("l1_value"))
    ranked = full.sort("request_id", "retrieval_rank").with_columns(
        pl.col("l2_value").rank("ordinal", descending=True).over("request_id").alias("l2_rank"),
        pl.col("true_value").rank("ordinal", descending=True).over("request_id").alias("true_rank"),
        (teacher_value.rank("ordinal", descending=True).over("request_id") <= k_l1)
        .alias("teacher_passed"))

    def share(rank: str, cut: int, passed: str = "passed_l1") -> float:
        return float(ranked.filter(pl.col(rank) <= cut)[passed].mean())  # type: ignore[arg-type]

    return {"retrieval_recall": share("l2_rank", n_slots), "ranking_recall": share("l2_rank", k_l1),
            "oracle_retrieval_recall": share("true_rank", n_slots),
            "oracle_ranking_recall": share("true_rank", k_l1),
            "headroom_retrieval_recall": share("l2_rank", n_slots, "teacher_passed"),
            "headroom_ranking_recall": share("l2_rank", k_l1, "teacher_passed")}


def funnel_recall(candidates: pl.DataFrame, arm: str, n_slots: int, k_l1: int) -> dict[str, Any]:
    """The six recalls of ``arm`` (``KEYS``) overall and per surface (``by_surface``)."""
    full = candidates.filter((pl.col("arm") == arm) & (pl.col("source") == "full_request"))
    out: dict[str, Any] = _shares(full, n_slots, k_l1)
    out["by_surface"] = {s: _shares(full.filter(pl.col("surface") == s), n_slots, k_l1)
                         for s in sorted(set(full["surface"].to_list()))}
    return out

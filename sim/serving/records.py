"""Log rows of one served batch: pure functions from :class:`Served` to table columns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.bidding import expected_value
from sim.clock import DAY_S, day_of
from sim.config.schema import OBJECTIVES, Config
from sim.features.registry import bits, fill_default
from sim.logs.writer import Coded, LogWriter
from sim.models.training_log import FULL, PARTIAL, WINNER, LoggedRows
from sim.rng import LOG_FULL_REQUEST, LOG_PARTIAL_CANDIDATE, LOG_PARTIAL_REQUEST, keyed_uniform
from sim.serving.arm import Arm
from sim.serving.funnel import Served, l2_predict
from sim.serving.index import TIERS
from sim.world.catalog import family_slices
from sim.world.marketplace import Marketplace
from sim.world.response import true_rates

Columns = dict[str, Any]
SOURCE_NAMES = ("partial_request", "full_request")  # by ``is_full``


@dataclass(frozen=True, kw_only=True)
class CandidateSample:
    """The candidates of a served batch logged to ``candidates`` and the training logs: (N,)
    batch rows, retrieval columns, and whether the request is logged in full."""

    row: np.ndarray
    col: np.ndarray
    is_full: np.ndarray


def request_rows(s: Served, arm: str, surfaces: np.ndarray) -> Columns:
    b = s.batch
    return {"request_id": b.request_id, "time": b.time, "day": day_of(b.time), "arm": arm,
            "user_id": b.user, "segment": b.segment, "surface": Coded(surfaces, b.surface),
            "n_retrieved": s.retrieved.live.sum(1),
            "n_impressions": (s.auctioned.result.winners >= 0).sum(1),
            **{f"{k}_ms": v for k, v in s.latency.ms.items()},
            **{f"{k}_ok": v for k, v in s.latency.ok.items()}}


def impression_rows(s: Served, arm: str, surfaces: np.ndarray, objective: np.ndarray) -> Columns:
    i, b = s.impressions, s.batch
    t = b.time[i.row]
    return {"request_id": b.request_id[i.row], "time": t, "day": day_of(t), "arm": arm,
            "user_id": b.user[i.row], "surface": Coded(surfaces, b.surface[i.row]), "ad_id": i.ad_id,
            "advertiser_id": i.advertiser, "objective": Coded(OBJECTIVES, objective[i.advertiser]),
            "position": i.position, "bid": i.bid, "price": i.price, "per_click": i.per_click,
            "cost": i.cost, "l1_pcvr": i.l1_pcvr, "l2_pctr": i.l2_pctr, "l2_pcvr": i.l2_pcvr,
            "l2_fallback": i.l2_fallback, "true_pctr": i.true_pctr, "true_pcvr": i.true_pcvr,
            "click": i.outcomes.click,
            "conversion": i.outcomes.conversion,
            "tier": Coded(TIERS, s.retrieved.tier[i.row, i.retrieval_col]),
            "item_version": s.retrieved.item_version[i.row, i.retrieval_col],
            "query_version": s.query_version}


def click_rows(s: Served, arm: str, objective: np.ndarray) -> Columns:
    i, b = s.impressions, s.batch
    c = i.outcomes.click
    t = b.time[i.row[c]]
    return {"request_id": b.request_id[i.row[c]], "time": t, "day": day_of(t), "arm": arm,
            "ad_id": i.ad_id[c], "advertiser_id": i.advertiser[c],
            "objective": Coded(OBJECTIVES, objective[i.advertiser[c]]),
            "position": i.position[c], "cost": np.where(i.per_click[c], i.price[c], 0.0),
            "l1_pcvr": i.l1_pcvr[c], "l2_pcvr": i.l2_pcvr[c], "l2_fallback": i.l2_fallback[c],
            "true_pcvr": i.true_pcvr[c],
            "conversion": i.outcomes.conversion[c]}


def conversion_rows(s: Served, arm: str, objective: np.ndarray, window_s: float,
                    horizon_s: float) -> Columns:
    i, b = s.impressions, s.batch
    c = i.outcomes.conversion
    click_t = b.time[i.row[c]]
    delay = i.outcomes.delay_s[c]
    t = click_t + delay
    return {"request_id": b.request_id[i.row[c]], "click_time": click_t, "time": t,
            "day": day_of(t), "arm": arm, "ad_id": i.ad_id[c], "advertiser_id": i.advertiser[c],
            "objective": Coded(OBJECTIVES, objective[i.advertiser[c]]),
            "attributed": delay <= window_s, "observed": t < horizon_s}


def sampled_candidates(s: Served, seed: int, full_rate: float, partial_rate: float,
                       partial_k: int) -> CandidateSample:
    """Which candidates to log: every live candidate of a ``full_rate`` share of requests, and
    ``partial_k`` random live candidates of a ``partial_rate`` share of the others (keyed draws)."""
    rid = s.batch.request_id
    live, ad_id = s.retrieved.live, s.retrieved.ad_id
    full = keyed_uniform(seed, rid, 0, LOG_FULL_REQUEST) < full_rate
    partial = ~full & (keyed_uniform(seed, rid, 0, LOG_PARTIAL_REQUEST) < partial_rate)
    keep = live & full[:, None]
    if partial.any():
        sub = np.flatnonzero(partial)
        u = keyed_uniform(seed, rid[sub][:, None], ad_id[sub], LOG_PARTIAL_CANDIDATE)
        u = np.where(live[sub], u, np.inf)
        k = min(partial_k, u.shape[1])
        cut = np.partition(u, k - 1, axis=1)[:, k - 1:k]
        keep[sub] = np.isfinite(u) & (u <= cut)
    row, col = np.nonzero(keep)
    return CandidateSample(row=row, col=col, is_full=full[row])


def candidate_rows(s: Served, arm: Arm, market: Marketplace, cfg: Config, sample: CandidateSample,
                   surfaces: np.ndarray) -> Columns | None:
    """The sampled-candidate log source; L2 scores and the truth for every logged candidate."""
    row, col, is_full = sample.row, sample.col, sample.is_full
    if row.size == 0:
        return None
    b, cat, adv = s.batch, market.catalog, market.advertisers
    r, k = s.retrieved, s.ranked
    slot = r.slot[row, col]
    advertiser = r.advertiser[row, col]
    sub = b.take(row)
    l2 = l2_predict(arm, market, cfg, sub, slot[:, None])
    pctr, pcvr = l2.pctr[:, 0], l2.pcvr[:, 0]
    passed = np.zeros((2, *r.live.shape), dtype=bool)
    np.put_along_axis(passed[0], k.sel1, k.ok1, axis=1)
    np.put_along_axis(passed[1], np.take_along_axis(k.sel1, k.sel2, axis=1), k.ok2, axis=1)
    won = np.zeros(r.live.shape, dtype=bool)
    won[s.impressions.row, s.impressions.retrieval_col] = True
    t_ctr, t_cvr = true_rates(market.truth, market.users.latent[sub.user], sub.surface,
                              cat.latent[slot][:, None, :], cat.creative[slot][:, None],
                              cat.quality[slot][:, None], market.users.logit_shifts(sub.user))
    return {"request_id": sub.request_id, "time": sub.time, "day": day_of(sub.time),
            "arm": arm.name, "source": Coded(SOURCE_NAMES, is_full.astype(np.int8)),
            "surface": Coded(surfaces, sub.surface), "ad_id": r.ad_id[row, col],
            "advertiser_id": advertiser,
            "objective": Coded(OBJECTIVES, adv.objective[advertiser]),
            "retrieval_rank": col, "l1_pcvr": r.l1_pcvr[row, col],
            "ctr_prior": r.ctr_prior[row, col], "l1_value": k.l1_value[row, col],
            "l2_pctr": pctr, "l2_pcvr": pcvr,
            "l2_value": expected_value(adv, advertiser, pctr, pcvr, k.bid_multiplier,
                                       cfg.bidding.bid_scale),
            "l2_fallback": ~s.latency.ok["l2"][row], "passed_l1": passed[0][row, col],
            "passed_l2": passed[1][row, col],
            "won": won[row, col], "true_pctr": t_ctr[:, 0], "true_pcvr": t_cvr[:, 0],
            "true_value": expected_value(adv, advertiser, t_ctr[:, 0], t_cvr[:, 0],
                                         k.bid_multiplier, cfg.bidding.bid_scale),
            "tier": Coded(TIERS, r.tier[row, col]), "item_version": r.item_version[row, col],
            "query_version": s.query_version}


def training_rows(s: Served, arm: Arm, market: Marketplace, truth_pcvr: np.ndarray | None,
                  sample: CandidateSample) -> LoggedRows:
    """Rows for the training logs: every impression, and the sampled candidates, with the ad
    features as they are now (logging time), families not onboarded to ``training_logs`` filled
    with the default. ``truth_pcvr`` is the sampled candidates' true pCVR."""
    i, b, cat, r = s.impressions, s.batch, market.catalog, s.retrieved
    logged = arm.features.families("training_logs")
    row, col, is_full = sample.row, sample.col, sample.is_full
    rows = np.concatenate([i.row, row])
    cols = np.concatenate([i.retrieval_col, col])
    n_imp = i.row.size
    conv_t = np.where(i.outcomes.conversion, b.time[i.row] + i.outcomes.delay_s, np.inf)
    return LoggedRows(
        time=b.time[rows], arm=np.full(rows.size, arm.code, np.int8), user=b.user[rows],
        surface=b.surface[rows],
        ad_features=fill_default(cat.features[r.slot[rows, cols]], logged,
                                 family_slices(arm.cfg.world.latent_dim)),
        ad_id=r.ad_id[rows, cols],
        source=np.concatenate([np.full(n_imp, WINNER), np.where(is_full, FULL, PARTIAL)]
                              ).astype(np.int8),
        tier=r.tier[rows, cols], item_version=r.item_version[rows, cols],
        query_version=np.full(rows.size, s.query_version, np.int32),
        position=np.concatenate([i.position, np.full(row.size, -1, np.int16)]),
        click=np.concatenate([i.outcomes.click, np.zeros(row.size, bool)]),
        conversion_time=np.concatenate([conv_t, np.full(row.size, np.inf)]),
        true_pcvr=np.concatenate([i.true_pcvr, truth_pcvr if truth_pcvr is not None
                                  else np.zeros(0)]),
        l1_pcvr=r.l1_pcvr[rows, cols].astype(np.float32),
        families=np.full(rows.size, bits(logged), np.uint8))


def log_batch(w: LogWriter, s: Served, arm: Arm, market: Marketplace, surfaces: np.ndarray,
              horizon: float, now: float, tick_spend: np.ndarray) -> LoggedRows:
    """Append the rows of a batch ``arm`` served at ``now`` to the request, impression, click,
    conversion and candidate logs, and the tick's spend (``tick_spend``, by advertiser) to the
    spend log; return the batch's rows for the training logs."""
    cfg = arm.cfg
    objective = market.advertisers.objective
    w.append("requests", request_rows(s, arm.name, surfaces))
    w.append("impressions", impression_rows(s, arm.name, surfaces, objective))
    w.append("clicks", click_rows(s, arm.name, objective))
    w.append("conversions", conversion_rows(s, arm.name, objective,
                                            cfg.world.attribution_window_s, horizon))
    lc = cfg.logs
    sample = sampled_candidates(s, cfg.seed, lc.full_request_rate, lc.partial_request_rate,
                                lc.partial_candidates)
    cand = candidate_rows(s, arm, market, cfg, sample, surfaces)
    if cand is not None:
        w.append("candidates", cand)
    spent = np.flatnonzero(tick_spend > 0)
    w.append("spend", {"time": now, "day": int(now // DAY_S), "arm": arm.name,
                       "advertiser_id": spent, "tick_spend": tick_spend[spent],
                       "spent_today": arm.budgets.ledger.spent_today[spent],
                       "budget": arm.budgets.ledger.budget[spent]})
    return training_rows(s, arm, market, None if cand is None else cand["true_pcvr"], sample)


def logged_chunk(chunk: int, now: float, logged: LoggedRows) -> Columns:
    """A batch's training rows as the ``training_rows`` log keeps them (``logs.training_rows``):
    numbered in append order, with the time they were appended (what the readiness check
    replays)."""
    return {"chunk": chunk, "logged_at": now,
            **{f.name: getattr(logged, f.name) for f in dataclasses.fields(logged)}}


def count_versions(counts: dict[tuple[int, int, int], int], hour: int, s: Served) -> None:
    """Add the live retrieved candidates of ``s`` to ``counts``, by (hour, tier code, query -
    item version)."""
    ret = s.retrieved
    tier = ret.tier[ret.live].astype(np.int64)
    dist = s.query_version - ret.item_version[ret.live].astype(np.int64)
    code = tier * 4096 + (dist + 2048)
    keys, n = np.unique(code, return_counts=True)
    for key, c in zip(keys.tolist(), n.tolist(), strict=True):  # a few (tier, distance)
        k = (hour, key // 4096, key % 4096 - 2048)
        counts[k] = counts.get(k, 0) + c


def version_rows(arm: str, counts: dict[tuple[int, int, int], int]) -> Columns:
    """The ``version_distance`` log of an arm's counts (:func:`count_versions`)."""
    keys = sorted(counts)
    return {"hour": [k[0] for k in keys], "arm": arm, "tier": [TIERS[k[1]] for k in keys],
            "distance": [k[2] for k in keys], "candidates": [counts[k] for k in keys]}

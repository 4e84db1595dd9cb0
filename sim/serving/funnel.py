"""The funnel for one batch of requests and one arm: retrieval -> L1 -> L2 -> auction -> response.

Everything is vectorised over the (requests x candidates) arrays of the batch; there is no Python
loop over requests or candidates. Shapes below: B requests, Kr retrieved, K1 kept by L1, K2 kept
by L2, S auction slots. Columns of a stage's arrays index into the previous stage's columns.

1. Query tower: one torch forward for the batch -> (B, D+1) query vectors.
2. Retrieval: one faiss search per deployed index tier, merged (duplicates keep the fresher
   tier's row) -> top-Kr rows; rows whose ad expired since the build, or whose advertiser has no
   budget left today, are dropped.
3. L1: the inner product faiss returned *is* the L1 logit of pCVR: the item vector stored in the
   index (of whatever version embedded it) dotted with the live query tower's vector (of the
   live query version). Version skew acts here and nowhere else. L1 utility = eCPM from L1
   pCVR, the index's per-ad pCTR prior, the advertiser's bid and its bid multiplier
   (:func:`sim.bidding.actuators`); top-K1.
4. L2: one torch forward over the (B x K1) pairs with every feature of the L2 store (the live
   catalog's feature families) -> pCTR, pCVR; utility = eCPM; top-K2.
5. Auction over the K2 bids (:func:`sim.auction.allocate`).
6. Response: true pCTR (with the position effect) and pCVR, drawn clicks and conversions keyed
   by (seed, request_id, ad_id, event); the cost of each impression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sim.auction import AuctionResult, allocate
from sim.bidding import Bids, actuators, expected_value, make_bids, participates
from sim.config.schema import Config
from sim.features.registry import fill_default
from sim.models.inputs import query_inputs, surface_onehot
from sim.numerics import sigmoid
from sim.serving.arm import Arm
from sim.serving.index import TIERS, search, search_exact
from sim.serving.latency import Latencies, draw_latencies, stage_work
from sim.topk import take, top_k
from sim.world.catalog import family_slices
from sim.world.delay import ConversionDelay
from sim.world.marketplace import Marketplace
from sim.world.response import Outcomes, draw_outcomes, true_rates
from sim.world.traffic import RequestBatch


@dataclass(frozen=True, kw_only=True)
class Impressions:
    """Flat arrays, one entry per filled slot (N impressions)."""

    row: np.ndarray  # int64 row of the batch
    position: np.ndarray  # int16 slot, 0 = top
    retrieval_col: np.ndarray  # int64 column in the retrieval arrays
    slot: np.ndarray  # int64 catalog slot
    ad_id: np.ndarray
    advertiser: np.ndarray
    bid: np.ndarray
    price: np.ndarray  # what the winner is charged per billing event: per click or per impression
    per_click: np.ndarray
    l1_pcvr: np.ndarray
    l2_pctr: np.ndarray
    l2_pcvr: np.ndarray
    l2_fallback: np.ndarray  # bool: L2 timed out, l2_* hold L1's estimates (not a teacher)
    true_pctr: np.ndarray  # at the impression's position
    true_pcvr: np.ndarray
    outcomes: Outcomes
    cost: np.ndarray  # currency charged for this impression (including its click, if per click)


@dataclass(frozen=True, kw_only=True)
class Hits:
    """The merged search of the deployed tiers: (B, k) arrays; a missing entry has row -1 and
    logit -inf."""

    logit: np.ndarray  # float32 inner product of query and item vector: the L1 logit
    tier: np.ndarray  # int8 code of the tier (TIERS order)
    row: np.ndarray  # int64 row of the tier's index


@dataclass(frozen=True, kw_only=True)
class Retrieved:
    """Retrieval and L1's estimate for a batch: (B, Kr) arrays, one column per retrieved row."""

    slot: np.ndarray  # catalog slot
    ad_id: np.ndarray  # -1 where nothing was retrieved
    advertiser: np.ndarray
    live: np.ndarray  # bool: a retrieved ad still live, of an advertiser with budget
    l1_pcvr: np.ndarray  # float64 sigmoid of the L1 logit
    ctr_prior: np.ndarray  # the index's per-ad pCTR prior
    tier: np.ndarray  # int8 code of the tier each candidate came from (TIERS order)
    item_version: np.ndarray  # int32 model version of the candidate's item vector
    item_families: np.ndarray  # uint8 families the candidate's item vector was built from


@dataclass(frozen=True, kw_only=True)
class L2Scores:
    """L2's estimates for (B, K) candidates, float32."""

    pctr: np.ndarray
    pcvr: np.ndarray


@dataclass(frozen=True, kw_only=True)
class Ranked:
    """L1's and L2's cuts. Columns of ``sel1`` index the retrieval columns, of ``sel2`` L1's."""

    l1_value: np.ndarray  # (B, Kr) eCPM from L1, -inf where not live
    sel1: np.ndarray  # (B, K1) retrieval columns kept by L1
    ok1: np.ndarray  # (B, K1) bool
    l2_pctr: np.ndarray  # (B, K1), L1's estimates where L2 timed out
    l2_pcvr: np.ndarray  # (B, K1)
    l2_value: np.ndarray  # (B, K1)
    sel2: np.ndarray  # (B, K2) L1 columns kept by L2
    ok2: np.ndarray  # (B, K2) bool
    l2_fallback: np.ndarray  # (B,) bool: L2 timed out for the request
    bid_multiplier: np.ndarray  # (A,) each advertiser's bid multiplier for this batch


@dataclass(frozen=True, kw_only=True)
class Auctioned:
    """The bids of L2's candidates, (B, K2), and the auction's outcome."""

    bids: Bids
    result: AuctionResult
    advertiser: np.ndarray  # (B, K2) each candidate's advertiser
    present: np.ndarray  # (B, K2) bool: the candidate took part (L2 kept it)

    def entrants(self) -> np.ndarray:
        """Each advertiser id once per auction it took part in (whatever its ads in it)."""
        seen = np.sort(np.where(self.present, self.advertiser, -1), axis=1)
        first = np.ones(seen.shape, bool)
        first[:, 1:] = seen[:, 1:] != seen[:, :-1]
        return seen[first & (seen >= 0)]


@dataclass(frozen=True, kw_only=True)
class Served:
    """Every stage of one batch, kept for logging and metrics."""

    batch: RequestBatch
    retrieved: Retrieved
    ranked: Ranked
    auctioned: Auctioned
    impressions: Impressions
    query_version: int  # model version of the query tower that served the batch
    latency: Latencies  # per-request latency and success of each stage


def l2_predict(arm: Arm, market: Marketplace, cfg: Config, batch: RequestBatch,
               slot: np.ndarray) -> L2Scores:
    """L2 (pCTR, pCVR) for candidates ``slot`` (B, K) of the batch's requests; (B, K) float32."""
    b, k = slot.shape
    ns = len(cfg.world.surfaces)
    user_x = np.repeat(market.users.features[batch.user], k, axis=0)
    surf_x = np.repeat(surface_onehot(batch.surface, ns), k, axis=0)
    ad_x = fill_default(market.catalog.features[slot.ravel()], arm.features.families(
        "l2_feature_store"), family_slices(cfg.world.latent_dim))
    with torch.inference_mode():
        x = arm.l2.inputs(torch.from_numpy(user_x), torch.from_numpy(surf_x),
                          torch.from_numpy(ad_x))
        p = torch.sigmoid(arm.l2(x)).numpy()
    return L2Scores(pctr=p[:, 0].reshape(b, k), pcvr=p[:, 1].reshape(b, k))


def retrieve(arm: Arm, queries: np.ndarray, k: int, fresh_only: np.ndarray | None = None,
             exact: bool = False) -> Hits:
    """Search every deployed tier and merge into the top ``k`` per query.

    An ad in both tiers keeps the fresher tier's row: rows the ``fresh`` tier supersedes are
    masked in the ``large`` tier (:meth:`Arm.deploy` keeps that mask). ``fresh_only`` (B,) marks
    requests whose item lookup timed out: they search the ``fresh`` tier alone. ``exact``: search
    each tier's fp32 reference vectors exhaustively instead of its index (the offline path,
    :func:`sim.serving.index.search_exact`)."""
    logits, rows, tiers = [], [], []
    find = search_exact if exact else search
    for code, name in enumerate(TIERS):  # at most two tiers: a loop over tiers, not requests
        if name not in arm.tiers or arm.tiers[name].n == 0:  # nothing to search or merge
            continue
        lg, rw = find(arm.tiers[name], queries, k)
        ok = rw >= 0
        if name in arm.superseded:
            ok &= ~arm.superseded[name][np.where(ok, rw, 0)]
        if fresh_only is not None and name != "fresh":  # item-lookup timeout: fresh tier only
            ok &= ~fresh_only[:, None]
        logits.append(np.where(ok, lg, -np.inf))
        rows.append(np.where(ok, rw, -1))
        tiers.append(np.full(rw.shape, code, np.int8))
    if not logits:
        b = queries.shape[0]
        return Hits(logit=np.full((b, k), -np.inf, np.float32), tier=np.zeros((b, k), np.int8),
                    row=np.full((b, k), -1, np.int64))
    if len(logits) == 1:
        return Hits(logit=logits[0], tier=tiers[0], row=rows[0])
    lg, rw, tr = (np.concatenate(x, axis=1) for x in (logits, rows, tiers))
    keep = top_k(lg, k)
    return Hits(logit=take(lg, keep), tier=take(tr, keep), row=take(rw, keep))


def query_vectors(arm: Arm, market: Marketplace, cfg: Config, batch: RequestBatch,
                  ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The batch's query vectors (B, D+1) from the arm's live query tower, and (B,) bool which
    requests have none. A request whose query tower timed out (``ok`` False) uses the user's last
    query vector from this arm, or has none; the fresh vectors go to the arm's cache."""
    qx = query_inputs(market.users, batch.user, batch.surface, len(cfg.world.surfaces))
    with torch.inference_mode():
        qv = arm.served_query().query_vectors(torch.from_numpy(qx)).numpy()
    cached = arm.query_cache.valid[batch.user]
    qv = np.where(ok[:, None], qv, arm.query_cache.vectors[batch.user])
    arm.query_cache.store(batch.user[ok], qv[ok])
    return qv, ~ok & ~cached


def arm_actuators(arm: Arm, market: Marketplace, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(A,) bid multipliers and participation rates of the arm's campaigns now
    (:func:`sim.bidding.actuators`)."""
    b = arm.budgets
    return actuators(market.advertisers.objective, b.multiplier, cfg.pacing.throttle_fixed_price,
                     b.cpa_multiplier if b.conversions is not None else None)


def retrieval(arm: Arm, market: Marketplace, cfg: Config, batch: RequestBatch,
              eligible: np.ndarray, lat: Latencies) -> Retrieved:
    """Query tower, the tiers' search and L1's pCVR, under the request's timeouts."""
    qv, no_query = query_vectors(arm, market, cfg, batch, lat.ok["query_tower"])
    hits = retrieve(arm, qv, cfg.funnel.k_retrieval, ~lat.ok["item_lookup"])
    rows = np.where(no_query[:, None], -1, hits.row)
    # one gather per field from the tiers' row tables laid end to end (``Arm.rows``); a missing
    # candidate points at the table's last row, the sentinel (ad_id -1)
    g = np.where(rows >= 0, rows + arm.row_offset[hits.tier], arm.rows["ad_id"].shape[0] - 1)
    slot, ad_id = arm.rows["slot"][g], arm.rows["ad_id"][g]
    valid = ad_id >= 0
    advertiser = market.catalog.advertiser[slot]
    _, rate = arm_actuators(arm, market, cfg)
    live = (valid & (market.catalog.ad_id[slot] == ad_id) & eligible[advertiser]
            & participates(cfg.seed, batch.request_id, advertiser, rate))
    return Retrieved(slot=slot, ad_id=ad_id, advertiser=advertiser, live=live,
                     l1_pcvr=sigmoid(np.where(valid, hits.logit, 0.0)),
                     ctr_prior=arm.rows["ctr_prior"][g], tier=hits.tier,
                     item_version=arm.rows["version"][g], item_families=arm.rows["families"][g])


def rank(arm: Arm, market: Marketplace, cfg: Config, batch: RequestBatch, ret: Retrieved,
         l2_ok: np.ndarray) -> Ranked:
    """L1's cut of the retrieved candidates by eCPM from L1's estimates, then L2's cut by eCPM
    from L2's (L1's where L2 timed out, ``l2_ok`` False)."""
    adv, scale = market.advertisers, cfg.bidding.bid_scale
    m, _ = arm_actuators(arm, market, cfg)
    l1_value = np.where(ret.live, expected_value(adv, ret.advertiser, ret.ctr_prior, ret.l1_pcvr,
                                                 m, scale), -np.inf)
    sel1 = top_k(l1_value, cfg.funnel.k_l1)
    ok1 = np.isfinite(take(l1_value, sel1))
    adv1 = take(ret.advertiser, sel1)
    l2 = l2_predict(arm, market, cfg, batch, take(ret.slot, sel1))
    late = ~l2_ok[:, None]  # L2 timeout: fall back to L1's estimates for the request
    l2_pctr = np.where(late, take(ret.ctr_prior, sel1), l2.pctr)
    l2_pcvr = np.where(late, take(ret.l1_pcvr, sel1), l2.pcvr)
    l2_value = np.where(ok1, expected_value(adv, adv1, l2_pctr, l2_pcvr, m, scale), -np.inf)
    sel2 = top_k(l2_value, cfg.funnel.k_l2)
    return Ranked(l1_value=l1_value, sel1=sel1, ok1=ok1, l2_pctr=l2_pctr, l2_pcvr=l2_pcvr,
                  l2_value=l2_value, sel2=sel2, ok2=np.isfinite(take(l2_value, sel2)),
                  l2_fallback=~l2_ok, bid_multiplier=m)


def run_auction(arm: Arm, market: Marketplace, cfg: Config, ret: Retrieved,
                ranked: Ranked) -> Auctioned:
    """Bids of L2's candidates from L2's estimates, and the auction over them."""
    adv1 = take(ret.advertiser, ranked.sel1)
    sel2 = ranked.sel2
    adv2 = take(adv1, sel2)
    bids = make_bids(market.advertisers, adv2, take(ranked.l2_pctr, sel2),
                     take(ranked.l2_pcvr, sel2), ranked.bid_multiplier, cfg.bidding.bid_scale)
    bad = ranked.ok2 & ~(np.isfinite(bids.bid) & np.isfinite(bids.quality))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise FloatingPointError(
            f"arm {arm.name}: a non-finite bid {bids.bid[r, c]} or quality {bids.quality[r, c]} "
            f"from L2's pCTR {take(ranked.l2_pctr, sel2)[r, c]} and pCVR "
            f"{take(ranked.l2_pcvr, sel2)[r, c]} (advertiser {adv2[r, c]})")
    auc = cfg.auction
    res = allocate(np.where(ranked.ok2, bids.bid, np.nan), quality=bids.quality,
                   n_slots=auc.n_slots, reserve=auc.reserve, rule=auc.rule,
                   slot_ctr=np.asarray(auc.slot_ctr[:auc.n_slots]))
    return Auctioned(bids=bids, result=res, advertiser=adv2, present=ranked.ok2)


def respond(market: Marketplace, cfg: Config, seed: int, batch: RequestBatch, ret: Retrieved,
            ranked: Ranked, auctioned: Auctioned) -> Impressions:
    """The filled slots: the truth at each slot, the drawn clicks and conversions, the charges."""
    res = auctioned.result
    row, position = np.nonzero(res.winners >= 0)
    col2 = res.winners[row, position]
    col1 = ranked.sel2[row, col2]
    colr = ranked.sel1[row, col1]
    slot = ret.slot[row, colr]
    cat = market.catalog
    pctr, pcvr = true_rates(market.truth, market.users.latent[batch.user[row]],
                            batch.surface[row], cat.latent[slot][:, None, :],
                            cat.creative[slot][:, None], cat.quality[slot][:, None],
                            market.users.logit_shifts(batch.user[row]))
    pctr = pctr[:, 0] * market.truth.position_ctr[position]
    pcvr = pcvr[:, 0]
    ad_id = ret.ad_id[row, colr]
    out = draw_outcomes(seed, batch.request_id[row], ad_id, pctr, pcvr,
                        ConversionDelay.from_config(cfg.world))
    per_click = auctioned.bids.per_click[row, col2]
    # per click: the price per click; per impression: what the slot delivers (sim.auction)
    price = np.where(per_click, res.prices[row, position], res.payments[row, position])
    cost = np.where(per_click, price * out.click, price)
    return Impressions(
        row=row, position=position.astype(np.int16), retrieval_col=colr, slot=slot,
        ad_id=ad_id, advertiser=ret.advertiser[row, colr], bid=auctioned.bids.bid[row, col2],
        price=price, per_click=per_click, l1_pcvr=ret.l1_pcvr[row, colr],
        l2_pctr=ranked.l2_pctr[row, col1], l2_pcvr=ranked.l2_pcvr[row, col1],
        l2_fallback=ranked.l2_fallback[row], true_pctr=pctr, true_pcvr=pcvr, outcomes=out,
        cost=cost)


def arm_work(arm: Arm, cfg: Config) -> dict[str, float]:
    """Per-request work of each stage on ``arm`` now (MFLOPs, :func:`stage_work`)."""
    return stage_work(arm.served_query(), arm.l2, arm.tiers.values(), cfg.funnel.k_l1,
                      cfg.latency.dtype_cost)


def serve(arm: Arm, market: Marketplace, cfg: Config, seed: int, batch: RequestBatch,
          eligible: np.ndarray, load: dict[str, float],
          work: dict[str, float] | None = None) -> Served:
    """Run the funnel for ``batch`` on ``arm``; ``eligible`` (A,) marks advertisers with budget;
    ``load`` is the serving fleet's work per second at each stage over all arms
    (:func:`sim.serving.latency.fleet_load`); ``work`` the arm's per-request work
    (:func:`arm_work`, computed when not given)."""
    work = arm_work(arm, cfg) if work is None else work
    lat = draw_latencies(cfg.latency, seed, batch.request_id, work, load)
    ret = retrieval(arm, market, cfg, batch, eligible, lat)
    ranked = rank(arm, market, cfg, batch, ret, lat.ok["l2"])
    auctioned = run_auction(arm, market, cfg, ret, ranked)
    imps = respond(market, cfg, seed, batch, ret, ranked, auctioned)
    return Served(batch=batch, retrieved=ret, ranked=ranked, auctioned=auctioned,
                  impressions=imps, query_version=arm.query_version, latency=lat)

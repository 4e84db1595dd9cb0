"""The auction: a pure mechanism, bids in, winners and prices out (no environment, no RNG).

Candidates are ranked by their score ``bid x quality`` (eCPM: expected currency per impression
*at the top slot* when ``bid`` is per unit of quality, e.g. per click with quality = pCTR).
Ties go to the lower candidate column (:func:`sim.topk.top_k`), so results are deterministic. A
NaN bid marks a missing candidate; any other bid must be finite and >= 0 and its quality finite
and >= 0, or the call fails naming the first bad value (a bad number is never dropped in
silence). A candidate takes part only if its score is positive and at least ``reserve``; slots
that no such candidate fills are empty (``-1``).

**Positions.** Slot k delivers ``a_k x quality`` expected units per impression, with ``a`` =
``slot_ctr`` (a separable position model; ``a`` all 1 when ``slot_ctr`` is None). So a
per-click bidder at slot k gets ``a_k x pCTR`` clicks per impression, and a per-impression bidder
(quality 1 for oCPM and CPM) gets ``a_k`` top-slot impressions' worth of value.

**Prices** are per unit of quality (a per-click price for a per-click bid). With ``e_k`` the
score at rank ``k`` (1-based, ranks past the last eligible candidate count as ``reserve``):

* ``gsp``          slot k pays ``max(e_{k+1}, reserve) / quality_k``;
* ``second_price`` every winner pays ``max(e_{n+1}, reserve) / quality_k`` (the uniform-price
  generalisation of Vickrey's auction; with one slot it *is* the second-price auction);
* ``first_price``  every winner pays its own bid;
* ``vcg``          slot k pays ``sum_{j=k..n} (a_j - a_{j+1}) e'_{j+1} / (a_k quality_k)``, where
  ``a_{n+1} = 0`` and ``e'`` the scores with reserve as a floor: the externality the winner
  imposes, per expected unit at its slot. With ``a`` all 1, VCG equals ``second_price``.

**Charges.** ``payments`` is what the slot costs per impression in expectation: ``price x
quality x a_k``. A per-click bidder is charged ``price`` per click (so ``payments`` in
expectation); a per-impression bidder is charged ``payments`` per impression, i.e. for what its
slot delivers: at slot 3 of ``a = (1, .75, .55)`` it pays 0.55 of the slot-1 price. So a
per-impression bidder whose bid is its value per top-slot impression never pays more than the
value its slot delivers, under every rule (with calibrated pCVR an oCPM advertiser's expected
CPA is at most its target at every slot).

Every rule charges no more than the bid (price <= bid) and no less than the reserve score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.topk import take, top_k

RULES = ("gsp", "second_price", "first_price", "vcg")


@dataclass(frozen=True, kw_only=True)
class AuctionResult:
    """Outcome of a batch of auctions; ``n_slots`` columns per request."""

    winners: np.ndarray  # (requests, n_slots) int64 candidate column, -1 for an empty slot
    prices: np.ndarray  # (requests, n_slots) float64 price per unit of quality, 0 where empty
    scores: np.ndarray  # (requests, n_slots) float64 winner's bid x quality, 0 where empty
    # (requests, n_slots) float64 expected charge per impression, price x quality x slot_ctr[k]:
    # what a per-impression bidder pays per impression at that slot; 0 where empty
    payments: np.ndarray


def _validate(bids: np.ndarray, quality: np.ndarray, n_slots: int, reserve: float, rule: str,
              slot_ctr: np.ndarray | None) -> None:
    if bids.ndim != 2:
        raise ValueError(f"`bids` must be 2-D (requests x candidates), got shape {bids.shape}")
    if quality.shape != bids.shape:
        raise ValueError(f"`quality` must have the shape of `bids` {bids.shape}, "
                         f"got {quality.shape}")
    if n_slots < 1:
        raise ValueError(f"`n_slots` must be >= 1, got {n_slots}")
    if not np.isfinite(reserve) or reserve < 0:
        raise ValueError(f"`reserve` must be finite and >= 0, got {reserve}")
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {list(RULES)}, got {rule!r}")
    present = ~np.isnan(bids)
    bad = present & ~(np.isfinite(bids) & (bids >= 0))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"`bids` must be finite and >= 0 (NaN marks a missing candidate), got "
                         f"{bids[r, c]} at [{r}, {c}]")
    bad = present & ~(np.isfinite(quality) & (quality >= 0))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"`quality` must be finite and >= 0 where a bid is present, got "
                         f"{quality[r, c]} at [{r}, {c}]")
    if slot_ctr is not None:
        if slot_ctr.shape != (n_slots,):
            raise ValueError(f"`slot_ctr` must have shape ({n_slots},), got {slot_ctr.shape}")
        if np.any(slot_ctr <= 0) or np.any(np.diff(slot_ctr) > 0):
            raise ValueError(f"`slot_ctr` must be positive and non-increasing, got {slot_ctr}")


def allocate(
    bids: np.ndarray,
    *,
    quality: np.ndarray | None = None,
    n_slots: int = 1,
    reserve: float = 0.0,
    rule: str = "gsp",
    slot_ctr: np.ndarray | None = None,
) -> AuctionResult:
    """Run one auction per row of ``bids``.

    Args:
        bids: (requests x candidates) bid per unit of quality, currency. NaN marks a missing
            candidate.
        quality: same shape, the units per impression the bid is for (e.g. pCTR for a per-click
            bid; 1 for a per-impression bid). Default all ones.
        n_slots: slots per request.
        reserve: minimum score ``bid x quality`` to take part, currency per impression.
        rule: ``gsp``, ``second_price``, ``first_price`` or ``vcg``.
        slot_ctr: (n_slots,) relative units each slot delivers (``a_k``), positive and
            non-increasing; used by ``vcg`` prices and by every rule's ``payments``.

    Returns:
        :class:`AuctionResult` with winners (candidate column or -1), prices per unit of quality
        and the expected payment per impression of each slot.

    One function of about 45 lines of code under this docstring: validation, ranking and the four
    pricing rules read best side by side.
    """
    bids = np.asarray(bids, dtype=np.float64)
    quality = np.ones_like(bids) if quality is None else np.asarray(quality, dtype=np.float64)
    sc = None if slot_ctr is None else np.asarray(slot_ctr, dtype=np.float64)
    _validate(bids, quality, n_slots, reserve, rule, sc)
    n_req, n_cand = bids.shape
    score = bids * quality
    eligible = np.isfinite(score) & (score > 0) & (score >= reserve) & (quality > 0)
    score = np.where(eligible, score, -np.inf)

    if n_cand == 0:  # no candidates: every slot empty
        empty = np.zeros((n_req, n_slots))
        return AuctionResult(winners=np.full((n_req, n_slots), -1, np.int64), prices=empty,
                             scores=empty.copy(), payments=empty.copy())
    depth = min(n_slots + 1, n_cand)
    order = top_k(score, depth)  # (n_req, depth) best first, ties to the lower column
    ranked = take(score, order)
    pad = n_slots + 1 - depth
    if pad > 0:
        order = np.concatenate([order, np.zeros((n_req, pad), dtype=order.dtype)], axis=1)
        ranked = np.concatenate([ranked, np.full((n_req, pad), -np.inf)], axis=1)

    filled = np.isfinite(ranked[:, :n_slots])
    winners = np.where(filled, order[:, :n_slots], -1).astype(np.int64)
    floor = np.where(np.isfinite(ranked), ranked, reserve)  # e' : reserve past the last eligible
    floor = np.maximum(floor, reserve)
    win_idx = np.where(filled, winners, 0)
    q_win = take(quality, win_idx)
    b_win = take(bids, win_idx)
    a = np.ones(n_slots) if sc is None else sc

    if rule == "gsp":
        pay = floor[:, 1:n_slots + 1]
    elif rule == "second_price":
        pay = np.repeat(floor[:, n_slots:n_slots + 1], n_slots, axis=1)
    elif rule == "first_price":
        pay = b_win * q_win
    else:  # vcg
        a_next = np.append(a[1:], 0.0)
        contrib = (a - a_next)[None, :] * floor[:, 1:n_slots + 1]  # (n_req, n_slots)
        tail = np.cumsum(contrib[:, ::-1], axis=1)[:, ::-1]  # sum over j >= k
        pay = tail / a[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        prices = np.where(filled, pay / q_win, 0.0)
    scores = np.where(filled, ranked[:, :n_slots], 0.0)
    payments = np.where(filled, prices * q_win * a[None, :], 0.0)
    return AuctionResult(winners=winners, prices=prices, scores=scores, payments=payments)

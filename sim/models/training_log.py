"""The training logs: what serving logged, with features as they were at logging time.

Releases train on a window of these rows and offline evaluation reads them, so the model sees the
features the *training logs* held (not the index's view of an ad). Three log sources, as in the
seeds: ``auction_winner`` (every impression), ``full_request`` (every live retrieved candidate of
a sampled request) and ``partial_request`` (a random subset of a sampled request's candidates).
Labels arrive late: a conversion counts for training at time ``t`` only if it happened by ``t``.

Rows are kept in chunks (one per served batch) and pruned by age, so memory is bounded by the
window and the sampling rates, not by the run's length; past ``max_rows`` the log thins its
unclicked rows (:class:`TrainingLog`) rather than dropping its oldest rows, which are the ones
the next release trains on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields

import numpy as np

from sim.rng import GOLDEN, TRAINING_LOG_KEEP, keyed_uniform

SOURCES = ("auction_winner", "full_request", "partial_request")
WINNER, FULL, PARTIAL = 0, 1, 2


@dataclass(frozen=True, kw_only=True)
class LoggedRows:
    """Aligned arrays, one entry per logged (request, ad) row."""

    time: np.ndarray  # float64 seconds
    arm: np.ndarray  # int8 arm index
    user: np.ndarray  # int64
    surface: np.ndarray  # int8
    ad_features: np.ndarray  # (n, F) float32, as logged
    ad_id: np.ndarray  # int64
    source: np.ndarray  # int8: WINNER, FULL or PARTIAL
    tier: np.ndarray  # int8 index tier the candidate was retrieved from
    item_version: np.ndarray  # int32 version of the item vector served
    query_version: np.ndarray  # int32 version of the query tower served
    position: np.ndarray  # int16 slot for impressions, -1 otherwise
    click: np.ndarray  # bool (False where not shown)
    conversion_time: np.ndarray  # float64 time of the conversion, inf if none
    true_pcvr: np.ndarray  # float64 ground truth, for offline evaluation only
    l1_pcvr: np.ndarray  # float32 the online L1 prediction
    families: np.ndarray  # uint8 bitmask of the feature families the logged features hold

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def take(self, idx: np.ndarray) -> LoggedRows:
        return LoggedRows(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def converted_by(self, t: float) -> np.ndarray:
        """Conversion labels as known at time ``t`` (bool)."""
        return self.conversion_time <= t

    def positives(self, t: float) -> tuple[int, int]:
        """Of the clicked impressions, (conversions known at ``t``, conversions still to come):
        ground truth of the delayed-feedback bias, the positives a fit at ``t`` trains as
        negatives. Both by the training labels' rule (:meth:`converted_by`), which counts a
        conversion whatever the attribution window."""
        clicked = self.click & (self.source == WINNER)
        ct = self.conversion_time
        late = clicked & np.isfinite(ct) & (ct > t)
        return int((clicked & (ct <= t)).sum()), int(late.sum())

    @staticmethod
    def concat(parts: list[LoggedRows]) -> LoggedRows:
        return LoggedRows(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                             for f in fields(LoggedRows)})


class TrainingLog:
    """A bounded window of logged rows.

    Rows older than ``keep_s`` (behind the newest appended) are dropped. Past ``max_rows`` the log
    thins its unclicked rows (impressions not clicked, candidates not shown), as the start-up's
    exploration log does (``training.exploration_negative_rate``): it halves the share of them it
    keeps (``keep``, 1 until then) until it is within the cap, and keeps that share of every
    later chunk's; every clicked row stays, so no conversion is lost. An unclicked row stays while
    its keyed draw (of the run's ``seed``, the row's time, user and ad:
    :func:`sim.rng.keyed_uniform`) is below the share, so each halving keeps a uniform half of
    what was kept, at every time alike, and a replay keeps the same rows (a twin, of the rows it
    shares, where it reached the same share). Releases train on the rows as kept, the click logit
    offset and the unclicked rows weighted as the start-up's (:mod:`sim.lifecycle`); what counts
    rows or scores a model on them reads :meth:`window` with ``uniform=True``, where the clicked
    rows are thinned by the same draws, a uniform sample at the share.

    Dropping the oldest rows instead (the log before this) drops the next release's window first
    (it ends ``releases.label_wait_s`` before the release): at a traffic that fills the cap within
    that wait every release found its window empty and was skipped. ``keep`` is in the run's
    metrics (``training_log_keep``)."""

    def __init__(self, window_s: float, max_rows: int, keep_s: float | None = None,
                 seed: int = 0) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.window_s = window_s
        self.keep_s = window_s if keep_s is None else keep_s  # how long rows are kept
        self.max_rows = max_rows
        self.seed = seed
        self.keep = 1.0  # the share of unclicked rows kept: halved each time the log passes its cap
        self._chunks: deque[LoggedRows] = deque()
        self._rows = 0

    def _draws(self, rows: LoggedRows) -> np.ndarray:
        with np.errstate(over="ignore"):
            key = rows.time.view(np.uint64) ^ (rows.user.astype(np.uint64) * GOLDEN)
        return keyed_uniform(self.seed, key, rows.ad_id, TRAINING_LOG_KEEP)

    def _kept(self, rows: LoggedRows, clicked: bool = True) -> LoggedRows:
        """The rows whose draw is below the share kept; every clicked row too, if ``clicked``."""
        keep = self._draws(rows) < self.keep
        return rows.take(np.flatnonzero(keep | rows.click if clicked else keep))

    def append(self, rows: LoggedRows) -> None:
        if len(rows) == 0:
            return
        newest = float(rows.time[-1])
        if self.keep < 1.0:
            rows = self._kept(rows)
        if len(rows):
            self._chunks.append(rows)
            self._rows += len(rows)
        while self._chunks and self._chunks[0].time[-1] < newest - self.keep_s:
            self._rows -= len(self._chunks.popleft())
        while self._rows > self.max_rows:
            if all(c.click.all() for c in self._chunks):
                raise RuntimeError(
                    f"the training log's clicked rows alone ({self._rows}) are more than "
                    f"releases.train_max_rows={self.max_rows}: raise it")
            self.keep /= 2.0
            chunks = (self._kept(c) for c in self._chunks)
            self._chunks = deque(c for c in chunks if len(c))
            self._rows = sum(len(c) for c in self._chunks)

    def window(self, end: float, arm: int | None = None, length: float | None = None,
               uniform: bool = False) -> LoggedRows | None:
        """Rows logged in ``[end - length, end)`` (default length: the window; of one arm, if
        given); None if empty. ``uniform``: a uniform sample at the share kept (the clicked rows
        thinned alike), for counting and scoring; otherwise every clicked row and that share of
        the unclicked ones, as releases train on them."""
        if not self._chunks:
            return None
        rows = LoggedRows.concat(list(self._chunks))
        length = self.window_s if length is None else length
        keep = (rows.time >= end - length) & (rows.time < end)
        if arm is not None:
            keep &= rows.arm == arm
        rows = rows.take(np.flatnonzero(keep))
        if uniform and self.keep < 1.0 and len(rows):
            rows = self._kept(rows, clicked=False)
        return rows if len(rows) else None

    def __len__(self) -> int:
        return self._rows

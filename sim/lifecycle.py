"""The model lifecycle: releases on a cadence, and the rollout of each release to serving.

Every ``releases.interval_s`` a release trains the next version of every live model on the
training logs of a ``releases.train_window_s`` window that ends ``releases.label_wait_s`` before the
release (so that most conversions of its clicks have arrived), each warm-started from its previous
version: first the L2 ranker (live at once: it scores the next batch), then every L1 lineage
(each arm's, and the readiness-check lineages of the skew sweep), distilled from the new L2.
On release, the new L1 item tower becomes the one enrichment and batch builds use; the new query
tower goes live ``releases.query_rollout_delay_s`` later. The index catches up only as items are
re-embedded and new tier builds deploy: that lag is where version skew comes from.

A model-versioning bug (``releases.pointer_lag`` = k > 0): the arm's serving pointer names the
version k releases behind the newest, so both towers serve an older checkpoint than the one the
offline evaluation scores (the registry's newest). Nothing else changes: the releases train and
register as before; only what serving loads is older.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
import simpy
import torch

from sim.clock import Wait
from sim.config.schema import Config
from sim.features.registry import feature_view
from sim.logs.writer import LogWriter
from sim.models.checkpoints import Checkpoints
from sim.models.families import parameter_count
from sim.models.fitting import (
    RngState,
    fit_l1,
    fit_l2,
    l1_pcvr,
    release_config,
    teacher_pcvr,
    torch_draws,
    warm_start,
)
from sim.models.label_join import pipeline_rows
from sim.models.ranker import Ranker
from sim.models.registry import ModelVersion, Registry
from sim.models.towers import TwoTowerBase
from sim.models.training_log import WINNER, LoggedRows, TrainingLog
from sim.rng import Streams
from sim.scoring import cross_entropy, log_mae
from sim.serving.arm import ReleasedArm
from sim.world.marketplace import Marketplace


class Lifecycle:
    def __init__(self, cfg: Config, market: Marketplace, registry: Registry, log: TrainingLog,
                 arms: Sequence[ReleasedArm], readiness: dict[str, str], streams: Streams,
                 writer: LogWriter, checkpoints: Checkpoints | None = None) -> None:
        """``readiness``: extra L1 lineages (lineage -> family) trained beside ``control``'s;
        ``checkpoints``: where a fit with known inputs is loaded instead of trained."""
        self.cfg, self.market, self.registry, self.log = cfg, market, registry, log
        self.arms, self.readiness, self.streams, self.writer = arms, readiness, streams, writer
        self.checkpoints = checkpoints
        self.releases = 0
        self.release_s = 0.0  # wall seconds spent releasing (training and registering)

    def release(self, now: float) -> dict[str, int]:
        """Train and register the next version of every lineage; return each released arm's new
        L1 version (empty if there are no logs yet).

        Each arm trains on the window's logs of every arm (``experiment.training: pooled``) or of
        its own arm (``diverted``), with its own config, from the same seeds: two arms with the
        same config and the same data get the same models."""
        end = now - self.cfg.releases.label_wait_s  # wait for late conversions before training
        window = self.log.window(end)
        if window is None or not np.any(window.source == WINNER):
            return {}
        self.releases += 1
        out: dict[str, int] = {}
        holdout = self.log.window(now, length=self.cfg.releases.label_wait_s, uniform=True)
        for arm in self.arms:
            rows = window
            if self.cfg.experiment.training == "diverted":
                rows = window.take(np.flatnonzero(window.arm == arm.code))
            if len(rows) > arm.cfg.releases.train_sample_rows:
                rng = self.streams.fresh(f"release_sample/{self.releases}")
                rows = rows.take(np.sort(rng.choice(len(rows), arm.cfg.releases.train_sample_rows,
                                                    replace=False)))
            if not np.any(rows.source == WINNER):
                continue  # e.g. an arm with no traffic yet under diverted training
            l1s = {arm.l1_lineage: arm.family}
            if arm.name == "control":
                l1s |= self.readiness
            rows = pipeline_rows(rows, now, arm.cfg)  # labels known now: a late join leaks
            seen = None if holdout is None else pipeline_rows(holdout, now, arm.cfg)
            out[arm.name] = self._release_arm(arm, l1s, rows, seen, now, end)
        return out

    def _release_arm(self, arm: ReleasedArm, l1s: dict[str, str], rows: LoggedRows,
                     holdout: LoggedRows | None, now: float,
                     end: float) -> int:
        """Release the arm's L2 and L1 lineages (each to its next version); return the L1 one."""
        gen = torch.Generator().manual_seed(self.streams.torch_seed(f"release/{self.releases}"))
        with torch_draws(self.streams.torch_seed(f"release-reinit/{self.releases}")):
            self._fit_arm(arm, l1s, rows, holdout, now, end, gen)
        version = self.registry.latest(arm.l1_lineage).version
        self.writer.append("rollouts", {"time": now, "arm": arm.name, "lineage": arm.l1_lineage,
                                        "side": "item", "version": self.pointer(arm, version)})
        return version

    def _fit_arm(self, arm: ReleasedArm, l1s: dict[str, str], rows: LoggedRows,
                 holdout: LoggedRows | None, now: float, end: float, gen: torch.Generator) -> None:
        """Fit and register the next version of the arm's L2, then of each L1 lineage (each L1
        beside the arm's own starting where the arm's own L1 ended)."""
        acfg = arm.cfg
        mcfg, share = release_config(acfg), acfg.releases.reinit_share
        view = feature_view(rows.families)
        start = end - acfg.releases.train_window_s
        users = self.market.users
        known, late = rows.positives(now)
        prev = self.registry.latest(arm.l2_lineage)
        l2 = warm_start(prev.ranker, share, gen)
        # a log thinned past its cap kept a share w of its unclicked rows: as on the start-up's
        # exploration log, the click logit trains offset by -log w and L1 weighs them by 1 / w
        w = self.log.keep
        fit = fit_l2(l2, rows, now, users, acfg, mcfg, gen, fit_norm=False,
                     checkpoints=self.checkpoints, ctr_offset=-math.log(w) if w < 1.0 else 0.0)
        self._register(ModelVersion(
            lineage=arm.l2_lineage, version=prev.version + 1, kind="l2", family="ranker",
            trained_at=now, window_start=start, window_end=end, feature_view=view,
            rows=int((rows.source == WINNER).sum()), train_loss=fit.loss, epochs=fit.epochs,
            parameters=parameter_count(l2), model=l2, positives=known, late_positives=late))
        arm.l2 = l2
        draws: RngState | None = None  # where each readiness lineage's draws start
        for lineage, family in l1s.items():
            if draws is not None:
                draws.restore(gen)
            prev = self.registry.latest(lineage)
            l1 = warm_start(prev.tower, share, gen)
            fit = fit_l1(l1, l2, rows, now, users, acfg, mcfg, gen, fit_norm=False,
                         checkpoints=self.checkpoints, unclicked_weight=1.0 / w)
            l1_view = feature_view(rows.families, list(acfg.models.l1_features))
            self._register(ModelVersion(
                lineage=lineage, version=prev.version + 1, kind="l1", family=family,
                trained_at=now, window_start=start, window_end=end, feature_view=l1_view,
                rows=len(rows), train_loss=fit.loss, epochs=fit.epochs,
                parameters=parameter_count(l1), model=l1,
                offline=self._holdout_metrics(l1, l2, holdout), positives=known,
                late_positives=late))
            if draws is None:
                draws = RngState.take(gen)  # after the arm's own L1

    def _holdout_metrics(self, l1: TwoTowerBase, teacher: Ranker,
                         rows: LoggedRows | None) -> dict[str, Any]:
        """Offline metrics of a new L1 version on the rows logged after its training window (the
        label-wait period): log MAE against the new L2 teacher, log loss against the true pCVR."""
        if rows is None or len(rows) == 0:
            return {}
        ns = len(self.cfg.world.surfaces)
        p = l1_pcvr(l1, rows, self.market.users, ns)
        t = teacher_pcvr(teacher, rows, self.market.users, ns)
        return {"holdout_rows": len(rows), "log_mae": log_mae(p, t),
                "log_loss": cross_entropy(rows.true_pcvr, p)}

    def _register(self, mv: ModelVersion) -> None:
        self.registry.register(mv)
        self.writer.append("model_releases", self.registry.log_rows(mv))

    def roll_out_query(self, arm: ReleasedArm, version: int, now: float) -> None:
        arm.query_model = self.registry.get(arm.l1_lineage, version).tower
        arm.query_version = version
        self.writer.append("rollouts", {"time": now, "arm": arm.name, "lineage": arm.l1_lineage,
                                        "side": "query", "version": version})

    @staticmethod
    def pointer(arm: ReleasedArm, released: int) -> int:
        """The version serving loads when ``released`` is the newest: ``releases.pointer_lag``
        versions behind it (0 without the model-versioning bug), version 1 at the least."""
        return max(1, released - arm.cfg.releases.pointer_lag)

    def item_tower(self, arm: ReleasedArm) -> Callable[[], tuple[TwoTowerBase, int]]:
        """The item tower enrichment and batch builds of ``arm`` use: the version the serving
        pointer names (:meth:`pointer`; the latest without a versioning bug)."""
        def live() -> tuple[TwoTowerBase, int]:
            version = self.pointer(arm, self.registry.latest(arm.l1_lineage).version)
            return self.registry.get(arm.l1_lineage, version).tower, version
        return live

    # -- processes -------------------------------------------------------------------------

    def releaser(self, env: simpy.Environment, wait: Wait
                 ) -> Generator[simpy.Event, None, None]:
        while True:
            yield wait("release", self.cfg.releases.interval_s)
            started = time.perf_counter()
            released = self.release(env.now)
            self.release_s += time.perf_counter() - started
            for arm in self.arms:
                if arm.name in released:
                    env.process(self._query_rollout(env, wait, arm, released[arm.name]))

    def _query_rollout(self, env: simpy.Environment, wait: Wait,
                       arm: ReleasedArm, version: int) -> Generator[simpy.Event, None, None]:
        yield wait("query_rollout", arm.cfg.releases.query_rollout_delay_s)
        version = self.pointer(arm, version)
        if version > arm.query_version:
            self.roll_out_query(arm, version, env.now)

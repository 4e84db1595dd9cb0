"""The model lifecycle and the index pipeline: families, registry, training logs, tier builds,
version telemetry, offline evaluation and the skew sweep."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sim.build import checked_lineages
from sim.config.overlay import arm_config
from sim.cpu_path import pin
from sim.features.registry import has_family
from sim.logs.writer import LogWriter
from sim.models.families import item_slices, make_l1, parameter_count, query_slices
from sim.models.fitting import l1_pcvr, torch_draws, tower_vectors
from sim.models.inputs import query_inputs
from sim.models.registry import ModelVersion, Registry
from sim.models.training_log import FULL, WINNER, LoggedRows, TrainingLog
from sim.rng import TRAINING_LOG_KEEP, keyed_uniform
from sim.serving.pipeline import EmbeddingTable, Snapshot, stale_slots, tier_members
from sim.simulation import Simulation
from sim.world.catalog import family_slices
from sim.world.traffic import draw_requests

from conftest import read_json, read_log, run_tiny, tiny_config


@pytest.mark.parametrize("family", ["simple", "dhen"])
def test_l1_families_share_the_serving_interface(family: str) -> None:
    cfg = tiny_config()
    model = make_l1(family, cfg)
    qw, iw = query_slices(cfg)[-1].stop, item_slices(cfg)[-1].stop
    q = model.query_vectors(torch.randn(5, qw))
    i = model.item_vectors(torch.randn(7, iw))
    assert q.shape == (5, cfg.models.embedding_dim + 1) and torch.all(q[:, -1] == 1)
    assert i.shape == (7, cfg.models.embedding_dim + 1)
    qx, ix = torch.randn(3, qw), torch.randn(3, iw)
    # the pair score is exactly the inner product the faiss index computes
    torch.testing.assert_close(model(qx, ix), (model.query_vectors(qx) * model.item_vectors(ix)).sum(1))


def test_families_differ_in_size() -> None:
    cfg = tiny_config()
    assert parameter_count(make_l1("simple", cfg)) != parameter_count(make_l1("dhen", cfg))


def test_registry_versions_are_consecutive() -> None:
    reg = Registry()
    model = make_l1("simple", tiny_config())
    mk = lambda v: ModelVersion(  # noqa: E731
        lineage="a/l1", version=v, kind="l1", family="simple", trained_at=0.0, window_start=0.0,
        window_end=0.0, feature_view=(), rows=0, train_loss=0.0, epochs=1, parameters=0,
        model=model)
    reg.register(mk(1))
    with pytest.raises(ValueError, match="expected version 2"):
        reg.register(mk(3))
    reg.register(mk(2))
    assert reg.latest("a/l1").version == 2 and reg.get("a/l1", 1).version == 1
    with pytest.raises(KeyError):
        reg.get("a/l1", 3)


def _rows(times: np.ndarray, conv: np.ndarray) -> LoggedRows:
    n = times.size
    return LoggedRows(time=times, arm=np.zeros(n, np.int8), user=np.zeros(n, np.int64),
                      surface=np.zeros(n, np.int8), ad_features=np.zeros((n, 2), np.float32),
                      ad_id=np.arange(n), source=np.full(n, WINNER, np.int8), tier=np.zeros(n, np.int8),
                      item_version=np.ones(n, np.int32), query_version=np.ones(n, np.int32),
                      position=np.zeros(n, np.int16), click=np.ones(n, bool), conversion_time=conv,
                      true_pcvr=np.full(n, 0.1), l1_pcvr=np.full(n, 0.1, np.float32),
                      families=np.full(n, 31, np.uint8))


def test_training_log_window_and_late_labels() -> None:
    log = TrainingLog(window_s=100.0, max_rows=1000, keep_s=150.0)
    for t0 in range(0, 400, 50):
        log.append(_rows(np.arange(t0, t0 + 50, 10.0), np.arange(t0, t0 + 50, 10.0) + 30))
    rows = log.window(300.0)
    assert rows is not None and rows.time.min() == 200.0 and rows.time.max() == 290.0
    assert log.window(100.0) is None  # pruned: older than keep_s before the newest row
    # a conversion 30 s after its click is not yet known at the end of the window
    known = rows.converted_by(300.0)
    assert known.tolist() == [True] * 8 + [False] * 2


def _draws(rows: LoggedRows, seed: int) -> np.ndarray:
    """The keyed draw an unclicked row of ``rows`` is kept by (the log's own key, spelled out)."""
    with np.errstate(over="ignore"):
        key = rows.time.view(np.uint64) ^ (rows.user.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    return keyed_uniform(seed, key, rows.ad_id, TRAINING_LOG_KEEP)


def _clicked_every(rows: LoggedRows, k: int) -> LoggedRows:
    """``rows`` with every k-th one clicked (by ad id) and the rest not."""
    return dataclasses.replace(rows, click=rows.ad_id % k == 0)


def test_training_log_thins_past_its_cap_and_keeps_the_releases_window() -> None:
    """Logging 200 rows every 10 s, a fifth of them clicked, against a cap of 1,000 rows: the
    log halves the share of unclicked rows it keeps (to 1/8: the 16 chunks within keep_s hold
    640 clicked rows, and 2,560 unclicked ones at 1, ~320 at 1/8, ~640 at 1/4), keeps every
    clicked row, and the window a release at 150 s trains on (0-100 s, ending a 50 s wait before
    it) still holds every 10 s, the unclicked rows at the same share. The rows kept are exactly
    the clicked ones and the unclicked ones whose keyed draw is below the share; the uniform view
    is every row whose draw is below it. Dropping the oldest rows (the log before) left none of
    the window."""
    log = TrainingLog(window_s=100.0, max_rows=1000, keep_s=150.0, seed=7)
    sent = []
    for t0 in range(0, 160, 10):
        chunk = _clicked_every(_rows(np.full(200, float(t0)), np.full(200, np.inf)), 5)
        sent.append(chunk)
        log.append(chunk)
        assert len(log) <= 1000
    assert log.keep == 0.125
    rows = log.window(100.0)
    assert rows is not None
    bins = (rows.time / 10).astype(int)
    assert np.bincount(bins[rows.click], minlength=10).tolist() == [40] * 10  # every click kept
    unclicked = np.bincount(bins[~rows.click], minlength=10)
    assert unclicked.size == 10 and np.all(np.abs(unclicked - 20) < 5 * 4.2)  # binomial(160, 1/8)
    everything = LoggedRows.concat(sent)
    draws = _draws(everything, 7)
    for uniform, kept in ((False, everything.click | (draws < 0.125)), (True, draws < 0.125)):
        got, want = log.window(151.0, length=151.0, uniform=uniform), everything.take(np.flatnonzero(kept))
        assert got is not None
        assert sorted(zip(got.time, got.ad_id, strict=True)) == \
            sorted(zip(want.time, want.ad_id, strict=True))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=30), st.integers(60, 2000),
       st.sampled_from([20.0, 60.0, 1000.0]), st.integers(0, 3))
def test_training_log_holds_its_cap_and_a_uniform_share(sizes: list[int], cap: int, keep_s: float,
                                                         seed: int) -> None:
    """Whatever is appended (a tenth of it clicked, never more than the cap within keep_s), the
    log never holds more than its cap, and it holds exactly the rows appended within keep_s of
    the newest that were clicked or whose keyed draw is below its share (1 while it never passed
    the cap: every such row); its uniform view, exactly those whose draw is below the share."""
    clicks = [-(-n // 10) for n in sizes]  # ad ids 0, 10, 20, ... of each chunk
    at = [i for i, n in enumerate(sizes) if n]
    assume(all(sum(clicks[j] for j in at if j <= i and 10.0 * (i - j) <= keep_s) <= cap for i in at))
    log = TrainingLog(window_s=keep_s, max_rows=cap, keep_s=keep_s, seed=seed)
    sent: list[LoggedRows] = []
    peak = 0  # the most rows within keep_s of the newest appended, unthinned
    newest = -np.inf
    for i, n in enumerate(sizes):
        chunk = _rows(np.full(n, 10.0 * i), np.full(n, np.inf))
        chunk = _clicked_every(dataclasses.replace(chunk, user=np.full(n, i, np.int64)), 10)
        log.append(chunk)
        assert len(log) <= cap
        if n:
            sent.append(chunk)
            newest = 10.0 * i
            peak = max(peak, sum(len(r) for r in sent if r.time[-1] >= newest - keep_s))
    live = [r for r in sent if r.time[-1] >= newest - keep_s]
    for uniform in (False, True):
        want = sorted((r.time[j], r.user[j], r.ad_id[j]) for r in live
                      for j in np.flatnonzero((_draws(r, seed) < log.keep) | (~uniform & r.click)))
        got = log.window(newest + 1.0, length=newest + 2.0, uniform=uniform) if sent else None
        have = [] if got is None else list(zip(got.time, got.user, got.ad_id, strict=True))
        assert sorted(have) == want
    assert (log.keep == 1.0) == (peak <= cap)


def test_a_training_log_of_clicks_beyond_its_cap_is_an_error() -> None:
    log = TrainingLog(window_s=100.0, max_rows=10, keep_s=100.0)
    with pytest.raises(RuntimeError, match=r"clicked rows alone \(20\).*train_max_rows=10"):
        log.append(_rows(np.arange(20.0), np.full(20, np.inf)))


def test_stale_slots_and_tier_members() -> None:
    table = EmbeddingTable.empty(4, 3)
    ad_id = np.array([10, 11, 12, 13])
    changed = np.zeros(4)
    assert stale_slots(table, ad_id, changed).tolist() == [0, 1, 2, 3]
    table.ad_id[:] = ad_id
    table.version[:] = [1, 1, 2, 2]
    table.embedded_at[:] = [0.0, 0.0, 50.0, 50.0]
    changed[1] = 60.0
    assert stale_slots(table, ad_id, changed).tolist() == [1]
    snap = Snapshot(time=50.0, table=table.copy())
    expires = np.array([100.0, 100.0, 100.0, 10.0])  # slot 3 expired
    assert tier_members("large", snap, ad_id, expires, 60.0, 50.0).tolist() == [0, 1, 2]
    assert tier_members("fresh", snap, ad_id, expires, 60.0, 0.0).tolist() == [2]
    ad_id[0] = 99  # slot 0 now holds another ad than the snapshot's
    assert tier_members("large", snap, ad_id, expires, 60.0, 50.0).tolist() == [1, 2]


def test_batch_builds_are_version_homogeneous_and_streaming_mixes(tmp_path: Path) -> None:
    common = ("days=0.5", "releases.interval_s=3600", "releases.label_wait_s=600",
              "releases.train_window_s=3600", "releases.query_rollout_delay_s=600",
              "world.feature_refresh_per_day=3", "index.large_build_interval_s=7200",
              "index.large_deploy_s=7200")
    run_tiny(tmp_path / "batch", "index=batch", *common)
    run_tiny(tmp_path / "stream", "index=streaming", *common)
    batch = read_log(tmp_path / "batch", "index_builds").filter(pl.col("n_items") > 0)
    assert (batch["n_versions"] == 1).all()
    stream = read_log(tmp_path / "stream", "index_builds")
    assert stream["n_versions"].max() >= 3
    vd = read_json(tmp_path / "stream" / "metrics.json")["arms"]["control"]["version_distance"]
    assert len(vd["all"]) >= 3 and sum(vd["all"].values()) == pytest.approx(1.0)
    assert set(vd["by_tier"]) <= {"fresh", "large"}


def test_version_distance_matches_impressions(tiny_run: Path) -> None:
    vd = read_log(tiny_run, "version_distance")
    # The item side moves first (enrichment switches at release, the query tower later), so
    # between a release and its query rollout a candidate can be one version *ahead*, never two.
    assert vd["distance"].min() >= -1
    metrics = read_json(tiny_run / "metrics.json")["arms"]["control"]["version_distance"]
    total = vd["candidates"].sum()
    for d, share in metrics["all"].items():
        assert share == pytest.approx(vd.filter(pl.col("distance") == int(d))["candidates"].sum()
                                      / total)
    reqs = read_log(tiny_run, "requests")
    assert total == reqs["n_retrieved"].sum()  # every live retrieved candidate, counted once


def test_offline_evaluation_and_skew_sweep_are_reported(tiny_run: Path) -> None:
    m = read_json(tiny_run / "metrics.json")
    control = m["offline"]["models"]["control"]
    assert control["lineage"] == "control/l1" and control["version"] == 3
    for source in ("auction_winner", "full_request", "partial_request"):
        entry = control["sources"][source]
        assert entry["overall"]["rows"] > 0 and entry["overall"]["log_mae"] >= 0
        assert sum(d["rows"] for d in entry["deciles"]) == entry["overall"]["rows"]
    sweep = m["offline"]["skew_sweep"]["simple"]
    assert set(sweep) == {"0", "1", "2"}
    assert sweep["0"]["all"]["delta"]["excess_loss"] == 0.0  # the clean pairing
    assert sweep["0"]["all"]["logit_shift"] == 0.0 and sweep["0"]["all"]["item_shift"] == 0.0
    assert all(sweep[k]["all"]["logit_shift"] > 0 and sweep[k]["all"]["item_shift"] > 0
               for k in ("1", "2"))  # each release moved the item tower
    assert sweep["1"]["all"]["query_norm"] > 0
    assert sweep["1"]["all"]["anchors"] == 2 and sweep["2"]["all"]["anchors"] == 1
    gate = m["offline"]["skew_gate"]["simple"]
    assert gate["result"] in {"pass", "fail"} and gate["distance"] == 2
    table = read_log(tiny_run, "skew_sweep")
    assert set(table["distance"].unique().to_list()) == {0, 1, 2}
    offline = read_log(tiny_run, "offline_eval")
    assert set(offline["source"].unique().to_list()) == {"auction_winner", "full_request",
                                                        "partial_request"}


def test_releases_train_on_windows_before_their_time(tiny_run: Path) -> None:
    releases = read_log(tiny_run, "model_releases")
    assert releases.filter(pl.col("version") > 1)["rows"].min() > 0
    l1 = releases.filter((pl.col("kind") == "l1") & (pl.col("version") > 1))
    assert (l1["holdout_rows"] > 0).all() and l1["holdout_log_mae"].is_finite().all()
    assert (releases["window_end"] <= releases["time"]).all()
    assert set(releases["feature_view"].unique().to_list()) == {
        "base,targeting,offsite_conversions,annotations,image_embedding"}


def test_training_rows_hold_features_as_logged(tmp_path: Path) -> None:
    """A logged row keeps the ad's features of its logging time, with the families not onboarded
    to the training logs zero-filled: a later feature refresh does not rewrite the past."""
    cfg = tiny_config("features.onboarding.offsite_conversions=[l2_feature_store,l1_embedding]")
    sim = Simulation.from_config(cfg, LogWriter(tmp_path / "logs", 10_000))
    cat = sim.market.catalog
    batch = draw_requests(sim.world.streams.get("traffic"), 0.0, 600.0, cfg.traffic, sim.market.users,
                          sim.market.surface_mix, 0)
    sim.serve_tick(batch, 600.0)
    rows = sim.world.training_log.window(601.0, length=601.0)
    assert rows is not None and len(rows) > 0
    slot_of = {int(a): i for i, a in enumerate(cat.ad_id)}
    slots = np.array([slot_of[int(a)] for a in rows.ad_id])
    expected = cat.features[slots].copy()
    sl = family_slices(cfg.world.latent_dim)["offsite_conversions"]
    assert expected[:, sl].any()  # the world has the counts; the training logs do not
    expected[:, sl] = 0.0
    np.testing.assert_array_equal(rows.ad_features, expected)
    assert not has_family(rows.families, "offsite_conversions").any()
    cat.features[:] += 1.0  # every ad's features change after logging
    again = sim.world.training_log.window(601.0, length=601.0)
    assert again is not None
    np.testing.assert_array_equal(again.ad_features, expected)
    assert (rows.source == WINNER).any() and (rows.source == FULL).any()  # impressions and candidates


def test_skew_sweep_covers_every_served_family_unless_told() -> None:
    cfg = tiny_config("experiment.arms=[control,treatment]",
                      "experiment.treatment.models.l1_family=dhen")
    arms = {"control": cfg, "treatment": arm_config(cfg, {"models": {"l1_family": "dhen"}})}
    assert checked_lineages(cfg, arms) == ({"simple": "control/l1", "dhen": "treatment/l1"}, {})
    one = tiny_config()
    assert checked_lineages(one, {"control": one}) == ({"simple": "control/l1"}, {})
    told = tiny_config("readiness.families=[dhen]")
    assert checked_lineages(told, {"control": told}) == (
        {"dhen": "readiness/dhen"}, {"readiness/dhen": "dhen"})


@pytest.mark.parametrize("family", ["simple", "dhen"])
def test_l1_scores_from_distinct_inputs_equal_a_forward_over_every_row(family: str,
                                                                        tmp_path: Path) -> None:
    """Offline scoring runs each tower once per distinct input and gathers; the result must be
    bit for bit the model's forward over every row (else offline metrics would drift). On the
    portable CPU path, MKL's ``COMPATIBLE`` branch can give a row other last bits in a batch of
    other rows (not in a prefix of the same batch: a row's result depends on its place): most of
    ``dhen``'s rows, and 1 of 4,219 of ``simple``'s in one checkout of the code but not in
    another (why the checkouts differ is not known). So there the two agree to float32's
    precision, not bit for bit, for every family."""
    cfg = tiny_config("days=0.2")
    sim = Simulation.from_config(cfg, LogWriter(tmp_path / "logs", 10_000))
    sim.run()
    rows = sim.world.training_log.window(sim.horizon + 1.0, length=sim.horizon + 1.0)
    assert rows is not None and len(rows) > 1000
    model = make_l1(family, cfg)
    users, ns = sim.market.users, len(cfg.world.surfaces)
    with torch.inference_mode():
        qx = torch.from_numpy(query_inputs(users, rows.user, rows.surface, ns))
        every = torch.sigmoid(model(qx, torch.from_numpy(rows.ad_features))).double().numpy()
    distinct = l1_pcvr(model, rows, users, ns)
    if pin().path == "portable":
        np.testing.assert_allclose(distinct, every, rtol=1e-5, atol=0)
    else:
        np.testing.assert_array_equal(distinct, every)
    q, i = tower_vectors(model, rows, users, ns)
    assert q.shape == (len(rows), cfg.models.embedding_dim + 1) == i.shape


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_learning_rate_schedule_is_what_the_optimiser_steps_with(schedule: str) -> None:
    from sim.config.schema import TrainingConfig
    from sim.models.training import EarlyStop, _batches, learning_rate

    cfg = TrainingConfig(learning_rate=0.01, epochs=3, batch_size=10, lr_schedule=schedule)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=123.0)
    gen = torch.Generator()
    stop = EarlyStop(model, 95, cfg, gen, lambda idx: 0.0)  # off: every row, every epoch
    seen = [opt.param_groups[0]["lr"] for _ in _batches(cfg, gen, opt, stop)]
    assert len(seen) == 30  # 3 epochs of ceil(95 / 10) batches
    assert seen == [learning_rate(cfg, s, 30) for s in range(30)]
    if schedule == "constant":
        assert seen == [0.01] * 30
    else:  # a half cosine: the full rate first, falling every step, to near 0 at the last
        assert seen[0] == 0.01 and all(a > b for a, b in zip(seen[:-1], seen[1:], strict=True))
        assert seen[15] == pytest.approx(0.005) and seen[-1] == pytest.approx(0.01 * 0.5 * (
            1 + np.cos(np.pi * 29 / 30)))
        assert seen[-1] < 1e-4


def test_parameter_initialisation_draws_from_its_named_stream_only() -> None:
    """Inside ``torch_draws(seed)`` torch's default generator starts at ``seed`` whatever came
    before, and after it the global state is what it was: no draw leaks in or out."""
    torch.manual_seed(1)
    before = torch.get_rng_state()
    with torch_draws(7):
        a = torch.nn.Linear(4, 3).weight.detach().clone()
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)  # someone else's draw
    with torch_draws(7):
        b = torch.nn.Linear(4, 3).weight.detach().clone()
    assert torch.equal(a, b)
    with torch_draws(8):
        assert not torch.equal(torch.nn.Linear(4, 3).weight, a)


def test_early_stopping_stops_when_the_holdout_stops_improving_and_keeps_the_best_epoch() -> None:
    """``training.early_stopping``: with patience 0 the fit stops at the first epoch whose
    holdout loss does not improve, and the model keeps the best epoch's weights; off, every row
    trains and nothing is drawn from the generator."""
    from sim.config.schema import TrainingConfig
    from sim.models.training import EarlyStop

    model = torch.nn.Linear(2, 1)
    scripted = iter([1.0, 0.8, 0.9, 0.7])
    cfg = TrainingConfig(early_stopping=True, holdout_share=0.25, epochs=4)
    gen = torch.Generator().manual_seed(0)
    stop = EarlyStop(model, 400, cfg, gen, lambda idx: next(scripted))
    assert stop.holdout is not None and 60 < stop.holdout.numel() < 140
    assert set(stop.train_rows.tolist()).isdisjoint(stop.holdout.tolist())
    assert stop.train_rows.numel() + stop.holdout.numel() == 400
    seen = []
    for epoch in range(4):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # mark each epoch's weights
        seen.append(epoch)
        if stop.after_epoch():
            break
    assert seen == [0, 1, 2] and stop.epochs == 3  # 0.9 after 0.8: no improvement, stop
    stop.finish()
    assert float(model.weight.detach()[0, 0]) == 1.0  # the best epoch (loss 0.8)
    off = TrainingConfig()
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    stop = EarlyStop(model, 400, off, g1, lambda idx: 0.0)
    assert stop.holdout is None and stop.train_rows.numel() == 400
    assert torch.equal(g1.get_state(), g2.get_state()) and not stop.after_epoch()


def test_a_world_trains_with_early_stopping(tmp_path: Path) -> None:
    m = run_tiny(tmp_path, "training.early_stopping=true", "training.epochs=4",
                 "releases.epochs=3")
    rel = read_log(tmp_path, "model_releases")
    assert rel.height > 0 and rel["train_loss"].is_finite().all()
    assert rel["epochs"].is_between(1, 4).all()  # start-up at most 4, releases at most 3
    assert (rel.filter(pl.col("time") > 0)["epochs"] <= 3).all()
    assert m["arms"]["control"]["impressions"] > 0

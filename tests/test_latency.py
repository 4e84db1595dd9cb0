"""Per-tower latency from the models' work, SLAs and the fallbacks of a timeout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sim.models.families import make_l1
from sim.models.ranker import Ranker
from sim.serving.latency import draw_latencies, fleet_load

from conftest import read_json, read_log, run_tiny, tiny_config


def _measured_mflops(module: torch.nn.Module, width: int) -> float:
    """FLOPs torch counts for one row's forward (matmuls and attention), in millions."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(torch.zeros(1, width))
    return counter.get_total_flops() / 1e6


@pytest.mark.parametrize("family", ["simple", "dhen"])
def test_declared_query_work_is_what_torch_counts(family: str) -> None:
    """The latency model reads each family's declared work; it must be the forward's real work."""
    model = make_l1(family, tiny_config())
    width = model.query_norm.mean.shape[0]
    assert model.query_mflops() == pytest.approx(_measured_mflops(model.query_tower, width),
                                                 rel=1e-12)


def test_declared_l2_work_is_what_torch_counts() -> None:
    ranker = Ranker(user_width=10, n_surfaces=3, ad_width=20, latent_dim=4, hidden=32,
                    n_positions=3)
    width = 10 + 3 + 20 + 4
    assert ranker.pair_mflops() == pytest.approx(_measured_mflops(ranker.net, width), rel=1e-12)
    assert ranker.pair_mflops() == 2 * (width * 32 + 32 * 32 + 32 * 2) / 1e6


def test_dhen_query_tower_does_more_work_than_simple_and_more_with_more_layers() -> None:
    cfg = tiny_config()
    simple, dhen = (make_l1(f, cfg).query_mflops() for f in ("simple", "dhen"))
    heavier = make_l1("dhen", tiny_config("models.dhen_layers=2", "models.dhen_heads=2"))
    assert heavier.query_mflops() > 1.5 * dhen and dhen > 1.2 * simple > 0


WORK = {"query_tower": 0.01, "item_lookup": 0.05, "l2": 1.0}


def test_latency_median_follows_the_fleet_load_against_the_reference() -> None:
    cfg = tiny_config().latency
    ids = np.arange(200_000)
    at_ref = {s: cfg.reference_rate * cfg.reference_mflops[s] for s in WORK}
    lat = draw_latencies(cfg, 0, ids, WORK, at_ref)
    assert np.array_equal(lat.ms["l2"], draw_latencies(cfg, 0, ids, WORK, at_ref).ms["l2"])
    for s in WORK:  # at the reference load the compute term is as stated
        assert np.median(lat.ms[s]) == pytest.approx(
            cfg.overhead_ms[s] + cfg.ms_per_mflop[s] * WORK[s], rel=0.01)
    # the share within the SLA is the lognormal's: Phi(ln(sla / median) / sigma)
    from scipy.stats import norm
    for s in WORK:
        median = cfg.overhead_ms[s] + cfg.ms_per_mflop[s] * WORK[s]
        expect = norm.cdf(np.log(cfg.sla_ms[s] / median) / cfg.sigma)
        assert lat.ok[s].mean() == pytest.approx(expect, abs=0.005), s
    # eight times the load: the compute term grows by 8 ** load_exponent, the overhead does not
    busy = draw_latencies(cfg, 0, ids, WORK, {s: 8 * v for s, v in at_ref.items()})
    expect = cfg.overhead_ms["l2"] + cfg.ms_per_mflop["l2"] * 8 ** cfg.load_exponent
    assert np.median(busy.ms["l2"]) == pytest.approx(expect, rel=0.01)


def test_fleet_load_is_a_rate_of_work_not_a_count_per_tick() -> None:
    """The same traffic cut into ticks of 60, 300 or 900 s is one load; a heavier arm adds its
    work to the fleet both arms share."""
    light, heavy = dict(WORK), {**WORK, "query_tower": 0.05}
    rate = 1.7  # requests per second
    loads = [fleet_load([(round(rate * dt * 0.7), light), (round(rate * dt * 0.3), light)], dt)
             for dt in (60.0, 300.0, 900.0)]
    for load in loads[1:]:
        for s in WORK:
            assert load[s] == pytest.approx(loads[0][s], rel=0.01)
    both = fleet_load([(700, light), (300, heavy)], 300.0)
    assert both["query_tower"] == pytest.approx((700 * 0.01 + 300 * 0.05) / 300.0)
    assert both["l2"] == pytest.approx(1000 * 1.0 / 300.0)
    with pytest.raises(ValueError, match="seconds"):
        fleet_load([(10, light)], 0.0)
    with pytest.raises(ValueError, match="load"):
        draw_latencies(tiny_config().latency, 0, np.arange(5), WORK, {**both, "l2": 0.0})


def test_latency_follows_the_fleet_load_not_the_batch() -> None:
    """One serving fleet: a small slice of the tick's requests is as slow as the whole tick."""
    cfg = tiny_config().latency
    ids = np.arange(100_000)
    load = fleet_load([(ids.size, WORK)], 300.0)
    whole = draw_latencies(cfg, 0, ids, WORK, load)
    part = draw_latencies(cfg, 0, ids[:20_000], WORK, load)  # a 20% arm of the same tick
    assert np.array_equal(part.ms["l2"], whole.ms["l2"][:20_000])


def test_run_latency_does_not_depend_on_the_tick_length(tmp_path: Path) -> None:
    """A tiny world served in 60 s and in 600 s ticks: each stage's median within 3%."""
    medians = {}
    for tick in (60, 600):
        run_tiny(tmp_path / str(tick), "days=1", f"traffic.tick_s={tick}", "pacing.interval_s=1200")
        reqs = read_log(tmp_path / str(tick), "requests")
        medians[tick] = {s: float(reqs[f"{s}_ms"].median()) for s in WORK}
    for s in WORK:
        assert medians[600][s] == pytest.approx(medians[60][s], rel=0.03), s


def test_aa_arms_see_one_latency_distribution_at_a_small_share(tmp_path: Path) -> None:
    run_tiny(tmp_path, "days=1", "experiment.arms=[control,treatment]",
             "experiment.ramp=[{day:0,share:0.2}]")
    reqs = read_log(tmp_path, "requests")
    for stage in ("query_tower", "item_lookup", "l2"):
        q = {arm: reqs.filter(pl.col("arm") == arm)[f"{stage}_ms"] for arm in ("control", "treatment")}
        for p in (0.5, 0.99):
            c, t = (float(q[a].quantile(p, "linear")) for a in ("control", "treatment"))
            assert t == pytest.approx(c, rel=0.05), (stage, p)


def test_item_lookup_work_follows_the_index() -> None:
    import faiss

    from sim.serving.latency import lookup_mflops

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 16)).astype(np.float32)
    flat = faiss.IndexFlatIP(16)
    flat.add(x)
    assert lookup_mflops(flat) == pytest.approx(2 * 4096 * 16 / 1e6)
    ivf = faiss.index_factory(16, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(x)
    ivf.add(x)
    faiss.extract_index_ivf(ivf).nprobe = 4
    assert lookup_mflops(ivf) == pytest.approx(2 * (64 + 4096 * 4 / 64) * 16 / 1e6)
    hnsw = faiss.IndexHNSWFlat(16, 8)
    hnsw.add(x)
    assert 0 < lookup_mflops(hnsw) < lookup_mflops(flat)


def test_slow_treatment_times_out_and_falls_back(tmp_path: Path) -> None:
    run_tiny(tmp_path, "experiment.arms=[control,treatment]",
             "experiment.treatment.models.l1_family=dhen", "latency.sla_ms.query_tower=12")
    m = read_json(tmp_path / "metrics.json")["arms"]
    assert m["treatment"]["latency_ms"]["query_tower"]["p99"] > m["control"]["latency_ms"][
        "query_tower"]["p99"]
    assert m["treatment"]["success_rate"]["query_tower"] < m["control"]["success_rate"]["query_tower"]
    reqs = read_log(tmp_path, "requests")
    assert (reqs["query_tower_ok"] == (reqs["query_tower_ms"] <= 12.0)).all()
    # a timed-out request of a user never served before by the arm gets no candidates
    first = reqs.sort("time").group_by("arm", "user_id", maintain_order=True).first()
    cold = first.filter(~pl.col("query_tower_ok"))
    assert cold.height > 0 and (cold["n_retrieved"] == 0).all()

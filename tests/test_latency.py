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
from sim.serving.latency import draw_latencies

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


def test_dhen_query_tower_does_more_work_than_simple() -> None:
    cfg = tiny_config()
    simple, dhen = (make_l1(f, cfg).query_mflops() for f in ("simple", "dhen"))
    assert dhen > 1.5 * simple > 0


def test_latency_draws_median_batch_effect_and_sla() -> None:
    cfg = tiny_config().latency
    ids = np.arange(200_000)
    work = {"query_tower": 0.01, "item_lookup": 0.05, "l2": 1.0}
    lat = draw_latencies(cfg, 0, ids[:512], work, 512)
    again = draw_latencies(cfg, 0, ids[:512], work, 512)
    assert np.array_equal(lat.ms["l2"], again.ms["l2"])  # keyed: reproducible
    big = draw_latencies(cfg, 0, ids, work, ids.size)
    scale = (ids.size / cfg.batch_ref) ** cfg.batch_exponent
    expect = cfg.overhead_ms["l2"] + cfg.ms_per_mflop["l2"] * 1.0 * scale
    assert np.median(big.ms["l2"]) == pytest.approx(expect, rel=0.01)
    assert np.array_equal(big.ok["l2"], big.ms["l2"] <= cfg.sla_ms["l2"])
    assert np.median(big.ms["l2"]) > np.median(lat.ms["l2"])  # bigger batches queue longer


def test_latency_follows_the_fleet_load_not_the_batch() -> None:
    """One serving fleet: a small slice of the tick's requests is as slow as the whole tick."""
    cfg = tiny_config().latency
    ids = np.arange(100_000)
    work = {"query_tower": 0.01, "item_lookup": 0.05, "l2": 1.0}
    whole = draw_latencies(cfg, 0, ids, work, ids.size)
    part = draw_latencies(cfg, 0, ids[:20_000], work, ids.size)  # a 20% arm of the same tick
    assert np.array_equal(part.ms["l2"], whole.ms["l2"][:20_000])
    with pytest.raises(ValueError, match="load"):
        draw_latencies(cfg, 0, ids, work, 10)


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
             "+experiment.treatment.models.l1_family=dhen", "latency.sla_ms.query_tower=12")
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

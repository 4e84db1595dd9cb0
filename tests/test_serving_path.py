"""Serving-path differences: quantised and approximate indexes, reduced-precision towers, and the
probe that measures them against the exact fp32 offline path."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sim.ann import empty_index, min_train_points
from sim.config import ConfigError, load_config
from sim.config.overlay import arm_config
from sim.serving.index import build_index, search, search_exact
from sim.serving.latency import code_bytes, lookup_mflops
from sim.serving.precision import Int8Linear, serve_as

from conftest import read_json, read_log, run_tiny, tiny_config


def _build(vectors: np.ndarray, factory: str, nprobe: int = 1):  # type: ignore[no-untyped-def]
    n = vectors.shape[0]
    ids = np.arange(n)
    return build_index(vectors, ids, ids, np.zeros(n), np.zeros(n), np.zeros(n), factory, 0.0,
                       nprobe=nprobe)


# -- the probe in a run -------------------------------------------------------------------------

def test_exact_fp32_serving_has_recall_one_and_no_score_error(tiny_run: Path) -> None:
    m = read_json(tiny_run / "metrics.json")["arms"]["control"]
    assert m["ann_recall"] == 1.0 and m["l1_score_error"] == 0.0
    sp = m["serving_path"]
    assert sp["l1_score_bias"] == 0.0
    assert sp["l1_calibration_served"] == sp["l1_calibration_exact"]
    assert (sp["index_factory"], sp["query_dtype"], sp["item_dtype"]) == ("Flat", "fp32", "fp32")
    log = read_log(tiny_run, "serving_path")
    # one row per tick (600 s over a quarter day), 10 requests probed in each (60 an hour)
    assert log.height == 36 and log["requests"].to_list() == [10] * 36
    assert (log["recalled"] == log["exact"]).all() and (log["abs_error"] == 0).all()


def test_coarse_product_quantisation_loses_recall_and_moves_scores(tmp_path: Path) -> None:
    # 4 sub-quantizers of 16 centroids (2 bytes a vector) after a rotation to 24 dimensions:
    # trainable on the tiny world's 96 ads, coarse enough to matter
    m = run_tiny(tmp_path, "index.factory='RR24,PQ4x4'")["arms"]["control"]
    assert m["ann_recall"] < 0.97
    assert m["l1_score_error"] > 0.01
    sp = m["serving_path"]
    assert sp["l1_calibration_served"] != sp["l1_calibration_exact"]


# -- bad settings stop before the run -----------------------------------------------------------

@pytest.mark.parametrize(("override", "key"), [
    ("serving.query_dtype=fp8", "serving.query_dtype"),
    ("serving.item_dtype=int4", "serving.item_dtype"),
    ("index.factory=PQ4", "index.factory"),  # 4 does not divide the 17 dimensions
    ("index.factory='IVF64,PQ4'", "index.factory"),  # nor the 18 of the padded IVF vectors
    ("index.factory=Bogus", "index.factory"),
    ("serving=ivf_pq index.nprobe=65", "index.nprobe"),  # more lists than IVF64 has
    ("latency.dtype_cost.fp32=0", "latency.dtype_cost.fp32"),
])
def test_each_bad_precision_setting_fails_naming_its_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"`{key}`"):
        load_config("default", override.split())


def test_a_bad_treatment_precision_names_the_overlay_key() -> None:
    cfg = tiny_config()
    with pytest.raises(ConfigError, match=r"`experiment.treatment`.*`index.factory`"):
        arm_config(cfg, {"index": {"factory": "PQ5"}})
    with pytest.raises(ConfigError, match=r"`experiment.treatment`: `serving.query_dtype`"):
        arm_config(cfg, {"serving": {"query_dtype": "fp64"}})


def test_dtype_cost_must_price_every_dtype() -> None:
    with pytest.raises(ConfigError, match=r"`latency.dtype_cost` must give exactly"):
        load_config("default", ["~latency.dtype_cost.int8"])


# -- the index ----------------------------------------------------------------------------------

def test_an_ivf_product_quantizer_that_exists_only_at_the_padded_width_builds() -> None:
    # 'IVF4,PQ3x4' cannot be built at 17 dimensions, only at the 18 of the norm padding
    with pytest.raises(RuntimeError):
        faiss.index_factory(17, "IVF4,PQ3x4", faiss.METRIC_INNER_PRODUCT)
    empty = empty_index("IVF4,PQ3x4", 17)
    assert empty.padded and empty.width == 18 and min_train_points(empty.index) == 16
    x = np.random.default_rng(0).standard_normal((300, 17)).astype(np.float32)
    idx = _build(x, "IVF4,PQ3x4", nprobe=4)
    assert idx.mips_norm2 is not None and idx.index.ntotal == 300
    assert load_config("default", ["index.factory='IVF4,PQ3x4'"]).index.factory == "IVF4,PQ3x4"


def test_a_build_too_small_for_its_product_quantizer_falls_back_to_flat() -> None:
    x = np.random.default_rng(1).standard_normal((100, 17)).astype(np.float32)
    idx = _build(x, "RR24,PQ8")  # 256 centroids a sub-quantizer, 100 vectors
    assert isinstance(idx.index, faiss.IndexFlatIP)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_exact_reference_search_is_the_flat_index_bit_for_bit(n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 9)).astype(np.float32)
    q = rng.standard_normal((5, 9)).astype(np.float32)
    idx = _build(x, "Flat")
    s1, r1 = search(idx, q, k)
    s2, r2 = search_exact(idx, q, k)
    kk = min(k, n)
    np.testing.assert_array_equal(r1[:, :kk], r2[:, :kk])
    np.testing.assert_array_equal(s1[:, :kk], s2[:, :kk])
    assert (r2[:, kk:] == -1).all() and np.isneginf(s2[:, kk:]).all()


def test_lookup_work_is_charged_by_the_bytes_of_each_code() -> None:
    x = np.random.default_rng(2).standard_normal((4096, 16)).astype(np.float32)
    flat, sq8, pq = (_build(x, f).index for f in ("Flat", "SQ8", "PQ8x4"))
    assert (code_bytes(flat), code_bytes(sq8), code_bytes(pq)) == (64, 16, 4)
    assert lookup_mflops(flat) == pytest.approx(2 * 4096 * 16 / 1e6)
    assert lookup_mflops(sq8) == pytest.approx(lookup_mflops(flat) / 4)
    # 4 bytes a vector read, plus the distance tables: 16 centroids of each 2-dim sub-vector
    assert lookup_mflops(pq) == pytest.approx((2 * 4096 * 16 * 4 / 64 + 2 * 16 * 16) / 1e6)


# -- the towers in reduced precision ------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), width=st.integers(1, 64), scale=st.floats(1e-3, 1e3))
def test_int8_linear_error_is_within_its_rounding_bound(seed: int, width: int, scale: float) -> None:
    """|x̂ŵ - xw| <= sum_k (s_x/2 |w_k| + |x_k| s_w/2 + s_x s_w / 4), with s the int8 scales."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(width, 5)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(5, width, generator=g))
    x = torch.randn(7, width, generator=g) * scale
    q = Int8Linear(lin)
    with torch.no_grad():
        err = (q(x) - lin(x)).abs().double()
    sx = (x.abs().amax(1, keepdim=True) / 127).double()
    sw = (lin.weight.abs().amax(1) / 127).double()
    w, xa = lin.weight.detach().abs().double(), x.abs().double()
    bound = sx / 2 * w.sum(1) + xa @ (w * 0 + 1).T * sw / 2 + width * sx * sw / 4
    assert (err <= bound * (1 + 1e-5) + 1e-5 * scale).all()
    assert set(torch.unique(q.weight_q).tolist()) <= set(range(-127, 128))


def test_fp32_serving_is_the_checkpoint_and_reduced_precision_a_copy() -> None:
    from sim.models.towers import TwoTower

    torch.manual_seed(0)
    model = TwoTower(6, 5, 4, 8)
    x = torch.randn(10, 6)
    assert serve_as(model, "fp32").model is model
    before = [p.clone() for p in model.parameters()]
    for dtype in ("bf16", "fp16", "int8"):
        served = serve_as(model, dtype)
        with torch.no_grad():
            got, want = served.query_vectors(x), model.query_vectors(x)
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert 0 < (got - want).abs().max() < 0.1, dtype
        assert (got[:, -1] == 1).all()  # the bias slot stays exactly 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_an_hnsw_graph_searches_with_the_configured_ef_search() -> None:
    x = np.random.default_rng(3).standard_normal((2000, 17)).astype(np.float32)
    q = np.random.default_rng(4).standard_normal((20, 17)).astype(np.float32)
    n = x.shape[0]
    ids = np.arange(n)
    narrow, wide = (build_index(x, ids, ids, np.zeros(n), np.zeros(n), np.zeros(n), "HNSW32", 0.0,
                                ef_search=ef) for ef in (16, 200))
    assert (narrow.index.hnsw.efSearch, wide.index.hnsw.efSearch) == (16, 200)
    exact = search_exact(wide, q, 100)[1]

    def recall(idx) -> float:  # type: ignore[no-untyped-def]
        return float(np.mean([np.isin(a, b).mean() for a, b in zip(search(idx, q, 100)[1], exact,
                                                                     strict=True)]))

    assert recall(narrow) < recall(wide)
    assert lookup_mflops(narrow.index) < lookup_mflops(wide.index)  # the search's work follows it
    assert load_config("default", ["serving=hnsw"]).index.ef_search == 200
